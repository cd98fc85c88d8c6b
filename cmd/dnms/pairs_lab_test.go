package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/mapper"
)

// TestPingPairs runs real agents with the default schedule (one ping per
// distinct forward and reverse route pair, its ports taking turns) on
// 2 spines × 3 leaves × 1 host, the localize lab fabric (with 2 leaves a
// leaf→spine link and the spine→leaf link after it carry the same routes).
// It checks that every agent's groups are exactly the pairs the agents'
// route maps show both ways, that the pings to each peer stay within
// pairs × rate, that every host pair is still measured, and that 20% loss
// on one leaf→spine link is still the only faulty link at the aggregator.
func TestPingPairs(t *testing.T) {
	const interval = 200 * time.Millisecond
	f, c, fail := startLabCluster(t, lab.Config{Spines: 2, Leaves: 3, HostsPerLeaf: 1},
		"-pingRouteInterval", interval.String(), "-mapInterval", "100ms", "-aggregateInterval", "500ms")
	ctx := context.Background()
	if err := demo.WaitFor(ctx, 60*time.Second, time.Second, c.AllPairsMeasured(20, "")); err != nil {
		fail("warm-up: %v", err)
	}

	// The groups settle on the pairs both route maps show.
	var want map[string]map[netip.Addr]pairCount
	if err := demo.WaitFor(ctx, 45*time.Second, time.Second, func() (err error) {
		want, err = checkPairs(c)
		return err
	}); err != nil {
		fail("ping groups: %v", err)
	}

	// Pings per peer over 10 s: at most one per pair per interval (+10%
	// and one ping for the window's edges).
	got, secs := pingsOver(t, c, 10*time.Second)
	var sent, ports, pairs float64
	for name, peers := range want {
		for peer, pc := range peers {
			n := got[name][peer.String()]
			limit := 1.1*float64(pc.schedules)*secs/interval.Seconds() + 1
			if n > limit {
				t.Errorf("%s → %s: %.0f pings in %.1f s for %d schedules (%d pairs, %d ports), want ≤ %.0f",
					name, peer, n, secs, pc.schedules, pc.pairs, pc.ports, limit)
			}
			if n == 0 {
				t.Errorf("%s → %s: no pings in %.1f s", name, peer, secs)
			}
			sent += n
			ports += float64(pc.ports)
			pairs += float64(pc.pairs)
		}
	}
	agents := float64(len(want))
	t.Logf("per agent: %.1f pings/s for %.0f (forward, reverse) pairs to its peers; pinging its %.0f mapped ports would be %.0f/s",
		sent/secs/agents, pairs/agents, ports/agents, ports/agents/interval.Seconds())
	if err := c.AllPairsMeasured(20, "")(); err != nil {
		t.Errorf("after the measurement: %v", err)
	}

	leaf, spine := router(t, f, "leaf", 0), router(t, f, "spine", 0)
	link := f.LinkBetween(leaf.Name, spine.Name)
	if err := f.SetLoss(link, leaf.Name, 20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.ClearFaults(link) })
	want1 := leaf.Loopback.String() + "→" + spine.Loopback.String()
	took := waitVerdicts(t, c, 60*time.Second, graph.VerdictFaulty, want1, false)
	t.Logf("20%% loss on %s: the only faulty link after %s", want1, took.Round(time.Millisecond))
}

// pairCount is one agent's view of one peer: mapped ports, distinct
// (forward, reverse) pairs among the ports both route maps hold, and the
// pinger's schedules.
type pairCount struct{ ports, pairs, schedules int }

// checkPairs compares every agent's ping groups with the pairs the route
// maps show: the agent's own map gives each port's forward route, the
// peer's map the same port's route back. Every group must hold ports of
// one pair, and the schedules must be the pairs plus one per port whose
// pair is not known both ways.
func checkPairs(c *demo.Cluster) (map[string]map[netip.Addr]pairCount, error) {
	type flow struct {
		src, dst netip.Addr
		port     uint16
	}
	routes := map[flow]string{}
	addr := map[string]netip.Addr{}
	for name, a := range c.Agents {
		addr[name] = a.Host.Addr
		var rm []mapper.RouteMapEntry
		if err := c.Get(name, "/v1/mapper/routemap", &rm); err != nil {
			return nil, err
		}
		for _, e := range rm {
			routes[flow{e.Src, e.Dst, e.SrcPort}] = e.RouteID
		}
	}
	out := map[string]map[netip.Addr]pairCount{}
	for name := range c.Agents {
		var rows []peerRow
		if err := c.Get(name, "/v1/mapper/peers", &rows); err != nil {
			return nil, err
		}
		out[name] = map[netip.Addr]pairCount{}
		for _, r := range rows {
			if r.Ping == nil {
				return nil, fmt.Errorf("%s: peer %s not pinged", name, r.Peer)
			}
			pairs, own := map[[2]string]bool{}, 0
			for _, g := range r.Ping.Groups {
				for _, p := range g.Ports {
					fwd, rev := routes[flow{addr[name], r.Peer, p}], routes[flow{r.Peer, addr[name], p}]
					if fwd == "" || rev == "" {
						own++
						continue
					}
					pairs[[2]string{fwd, rev}] = true
					if g.Forward != fwd || g.Reverse != rev {
						return nil, fmt.Errorf("%s → %s port %d: grouped as %.8s/%.8s, route maps say %.8s/%.8s",
							name, r.Peer, p, g.Forward, g.Reverse, fwd, rev)
					}
				}
			}
			if r.Ping.Schedules != len(pairs)+own {
				return nil, fmt.Errorf("%s → %s: %d schedules, want %d pairs + %d ports alone", name, r.Peer, r.Ping.Schedules, len(pairs), own)
			}
			if own > 0 {
				return nil, fmt.Errorf("%s → %s: %d ports not known both ways yet", name, r.Peer, own)
			}
			out[name][r.Peer] = pairCount{ports: r.Ping.PortsMapped, pairs: len(pairs), schedules: r.Ping.Schedules}
		}
		if len(out[name]) != len(c.Agents)-1 {
			return nil, fmt.Errorf("%s pings %d peers, want %d", name, len(out[name]), len(c.Agents)-1)
		}
	}
	return out, nil
}

// pingsOver counts each agent's pings per peer over a measurement window.
func pingsOver(t testing.TB, c *demo.Cluster, window time.Duration) (map[string]map[string]float64, float64) {
	t.Helper()
	before := map[string]map[string]float64{}
	for name := range c.Agents {
		before[name] = sentPerPeer(t, c, name)
	}
	start := time.Now()
	time.Sleep(window) // the measurement window, not a wait for anything
	secs := time.Since(start).Seconds()
	out := map[string]map[string]float64{}
	for name := range c.Agents {
		out[name] = map[string]float64{}
		for peer, n := range sentPerPeer(t, c, name) {
			out[name][peer] = n - before[name][peer]
		}
	}
	return out, secs
}

// BenchmarkPingLoad measures the pings per second of an agent on a lab
// fabric (2 spines × 3 leaves × 2 hosts, default intervals) once every
// mapped port of every peer is pinged: with -pingEveryPort and with the
// default (one per distinct forward and reverse route pair), in the same
// run. Reported: pings/s per agent for each and their ratio.
func BenchmarkPingLoad(b *testing.B) {
	lab.RequireRoot(b)
	bin := buildDNMS(b)
	rate := map[string]float64{}
	for _, mode := range []string{"every-port", "pairs"} {
		var args []string
		if mode == "every-port" {
			args = []string{"-pingEveryPort"}
		}
		_, c, fail := startLabClusterWith(b, lab.Config{Spines: 2, Leaves: 3, HostsPerLeaf: 2}, demo.Config{Binary: bin, Args: args})
		settled := func() error {
			if mode == "pairs" {
				if _, err := checkPairs(c); err != nil {
					return err
				}
			}
			for name := range c.Agents {
				var rows []peerRow
				if err := c.Get(name, "/v1/mapper/peers", &rows); err != nil {
					return err
				}
				for _, r := range rows {
					if r.Ping == nil || r.Ping.PortsMapped != r.PortsInRange {
						return fmt.Errorf("%s → %s: not every port mapped and pinged yet: %+v", name, r.Peer, r.Ping)
					}
				}
			}
			return nil
		}
		if err := demo.WaitFor(context.Background(), 120*time.Second, time.Second, settled); err != nil {
			fail("%s: %v", mode, err)
		}
		got, secs := pingsOver(b, c, 20*time.Second)
		sum := 0.0
		for _, peers := range got {
			for _, n := range peers {
				sum += n
			}
		}
		rate[mode] = sum / secs / float64(len(got))
		c.Stop()
	}
	b.ReportMetric(rate["every-port"], "pings/s-every-port")
	b.ReportMetric(rate["pairs"], "pings/s-pairs")
	b.ReportMetric(rate["pairs"]/rate["every-port"], "ratio")
}

// sentPerPeer reads dnms_probes_sent_total per peer from an agent's /metrics.
func sentPerPeer(t testing.TB, c *demo.Cluster, name string) map[string]float64 {
	t.Helper()
	b, err := c.GetRaw(name, "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", name, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, `dnms_probes_sent_total{peer="`)
		if !ok {
			continue
		}
		peer, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[peer] = v
		}
	}
	return out
}
