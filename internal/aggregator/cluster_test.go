package aggregator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/graph"
)

// TestClusterDrivesAggregator wires the Aggregator as a cluster.Handler, the
// way cmd/dnms does: members found by gossip on loopback are subscribed to
// (this node included), and a member that leaves has its routes removed.
func TestClusterDrivesAggregator(t *testing.T) {
	a := startLiveAgent(t, "aggr", nil) // the aggregator node's own agent
	b := startLiveAgent(t, "agentB", nil)
	kA := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
	a.g.SetRoute(kA, hopsOf(hA, leaf1, sp1, leaf2, hB))
	addSamples(a.g, kA, 0, 20, 0)
	b.g.SetRoute(kA.Reverse(), hopsOf(hB, leaf2, sp1, leaf1, hA))
	addSamples(b.g, kA.Reverse(), 0, 20, 0)

	h := startAggregator(t, func(c *Config) { c.Token = "tok" })
	ca, _ := startNode(t, "aggr", cluster.RoleAggregator, portOf(t, a.srv.URL), nil)
	ca.AddHandlerWithSelf(h.a)
	_, stopB := startNode(t, "agentB", cluster.RoleAgent, portOf(t, b.srv.URL), nil, seedOf(ca))

	waitMirrors(t, h.g, a)
	waitMirrors(t, h.g, b)
	if names := statusNames(h.a); !slices.Equal(names, []string{"agentB", "aggr"}) {
		t.Fatalf("members %v", names)
	}

	stopB() // leaves the cluster
	eventually(t, 20*time.Second, "agentB's routes removed", func() (bool, string) {
		got := routeView(h.g.Snapshot().Routes, "agentB")
		return len(got) == 0, fmt.Sprint(got)
	})
	waitMirrors(t, h.g, a)
}

func statusNames(a *Aggregator) []string {
	var n []string
	for _, s := range a.Status() {
		n = append(n, s.Name)
	}
	return n
}

// TestAggregatesAdvertisedHTTPAddr: an agent gossips on 127.0.0.1 but
// serves its API on another loopback address it advertises
// (-httpAdvertise); the aggregator connects there and merges its routes.
func TestAggregatesAdvertisedHTTPAddr(t *testing.T) {
	second := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(250), 1+rand.IntN(250))
	a := startLiveAgent(t, "aggr", nil)
	b := startLiveAgentOn(t, "agentB", net.JoinHostPort(second, "0"), nil)
	kA := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
	b.g.SetRoute(kA.Reverse(), hopsOf(hB, leaf2, sp1, leaf1, hA))
	addSamples(b.g, kA.Reverse(), 0, 20, 0)

	h := startAggregator(t, func(c *Config) { c.Token = "tok" })
	ca, _ := startNode(t, "aggr", cluster.RoleAggregator, a.httpAddr(t).Port(), nil)
	ca.AddHandlerWithSelf(h.a)
	bAddr := b.httpAddr(t)
	startNodeAt(t, "agentB", cluster.RoleAgent, bAddr.Addr(), bAddr.Port(), nil, seedOf(ca))

	waitMirrors(t, h.g, b)
	for _, s := range h.a.Status() {
		if s.Name == "agentB" && !strings.Contains(s.URL, second) {
			t.Errorf("agentB aggregated at %s, want its advertised %s", s.URL, second)
		}
	}
}

// httpAddr is where the agent's API listens.
func (l *liveAgent) httpAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	u, err := url.Parse(l.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// portOf is the port of a test server's URL.
func portOf(t *testing.T, u string) uint16 {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(pu.Port())
	return uint16(p)
}

// seedOf is a node's gossip address, to join it.
func seedOf(c *cluster.Cluster) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port()))
}

// startNode runs a real memberlist node on loopback with fast timings,
// advertising httpPort, encrypted with key when set. stop leaves the cluster.
func startNode(t *testing.T, name, role string, httpPort uint16, key []byte, seeds ...string) (c *cluster.Cluster, stop func()) {
	t.Helper()
	return startNodeAt(t, name, role, netip.Addr{}, httpPort, key, seeds...)
}

// startNodeAt is startNode advertising its API at httpAddr (zero: its
// gossip address), as -httpAdvertise does.
func startNodeAt(t *testing.T, name, role string, httpAddr netip.Addr, httpPort uint16, key []byte, seeds ...string) (c *cluster.Cluster, stop func()) {
	t.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	cfg := cluster.DefaultConfig()
	cfg.NodeName, cfg.Role, cfg.HTTPPort, cfg.GossipKey, cfg.HTTPAddr = name, role, httpPort, key, httpAddr
	cfg.BindAddr, cfg.AdvertiseAddr, cfg.Port = lo, lo, 0
	cfg.Seeds = seeds
	cfg.JoinBackoffMin, cfg.JoinBackoffMax, cfg.LeaveTimeout = 50*time.Millisecond, time.Second, time.Second
	cfg.Logger = testLogger()
	cfg.Tune = func(mc *memberlist.Config) {
		mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = 400*time.Millisecond, 300*time.Millisecond, 50*time.Millisecond
	}
	c, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("cluster node %s did not stop", name)
		}
	}
	t.Cleanup(stop)
	return c, stop
}
