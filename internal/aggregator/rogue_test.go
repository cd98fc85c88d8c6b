package aggregator

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/testcert"
)

// rogueGraph is what a rogue member serves: made-up lossy routes through the
// healthy spine, which would make it look faulty if imported.
func rogueScript(t *testing.T) string {
	bad := route(40000, 0.5, leaf1, sp1, leaf2)
	return frame(t, "snapshot", 3, snap(3, bad))
}

// assertNothingFrom checks that the rogue got no request (so no token) and
// that the aggregator holds none of its routes.
func assertNothingFrom(t *testing.T, h *harness, rogue *fakeAgent, name string) {
	t.Helper()
	if n := len(rogue.requests()); n != 0 {
		t.Errorf("rogue %s got %d requests (first Authorization %q)", name, n, rogue.requests()[0].Get("Authorization"))
	}
	if got := routeView(h.g.Snapshot().Routes, name); len(got) != 0 {
		t.Errorf("rogue %s's routes imported: %v", name, got)
	}
}

// TestRogueMemberGossipKey: in a cluster with a gossip key, a node without
// the key cannot join, so the aggregator never subscribes to it: it gets no
// token and none of its routes. A keyed member is imported meanwhile.
func TestRogueMemberGossipKey(t *testing.T) {
	key := []byte("0123456789abcdef")
	b := startLiveAgent(t, "agentB", nil)
	kB := graph.RouteKey{Src: hB, Dst: hA, SrcPort: 33436}
	b.g.SetRoute(kB, hopsOf(hB, leaf2, sp1, leaf1, hA))
	addSamples(b.g, kB, 0, 20, 0)
	rogue := newFakeAgent(t, rogueScript(t))

	h := startAggregator(t, func(c *Config) { c.Token = "tok"; c.Trust = TrustGossipKey })
	ca, _ := startNode(t, "aggr", cluster.RoleAggregator, 1, key)
	ca.AddHandler(h.a)
	startNode(t, "rogue", cluster.RoleAgent, portOf(t, rogue.srv.URL), nil, seedOf(ca))
	startNode(t, "rogue-wrongkey", cluster.RoleAgent, portOf(t, rogue.srv.URL), []byte("fedcba9876543210"), seedOf(ca))
	startNode(t, "agentB", cluster.RoleAgent, portOf(t, b.srv.URL), key, seedOf(ca))

	waitMirrors(t, h.g, b)
	if got := b.requests()[0].Get("Authorization"); got != "Bearer tok" {
		t.Errorf("keyed member got Authorization %q", got)
	}
	// The rogues retry their join every 50 ms-1 s: watch for 2 s that
	// none of them ever becomes a member.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		if names := statusNames(h.a); !slices.Equal(names, []string{"agentB"}) {
			t.Fatalf("aggregator members %v, want only agentB", names)
		}
		if n := len(ca.Members()); n != 2 {
			t.Fatalf("%d gossip members, want aggr and agentB", n)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	assertNothingFrom(t, h, rogue, "rogue")
}

// TestRogueMemberTLS: with cluster mTLS and an open gossip, rogues join the
// gossip but cannot prove they belong: one with a certificate from another
// CA (tls) and one with a cluster certificate issued to another member
// (identity). Neither gets a request, nor a token, nor any import; both are
// reported rejected and counted. The real member is imported over mTLS.
func TestRogueMemberTLS(t *testing.T) {
	lo := net.ParseIP("127.0.0.1")
	ca := testcert.NewCA(t, "dnms cluster")
	mk := func(name string, c *testcert.CA) *cluster.ClusterTLS {
		l := c.Leaf(t, name, lo)
		return &cluster.ClusterTLS{Pool: poolOf(t, ca), Cert: l.TLS(t)}
	}
	bTLS := mk("agentB", ca)
	b := startLive(t, "agentB", "127.0.0.1:0", nil, bTLS.ServerConfig())
	kB := graph.RouteKey{Src: hB, Dst: hA, SrcPort: 33436}
	b.g.SetRoute(kB, hopsOf(hB, leaf2, sp1, leaf1, hA))
	addSamples(b.g, kB, 0, 20, 0)

	otherCA := testcert.NewCA(t, "not the cluster")
	rogueTLS := newFakeAgentTLS(t, &tls.Config{Certificates: []tls.Certificate{otherCA.Leaf(t, "rogue", lo).TLS(t)}}, rogueScript(t))
	thief := newFakeAgentTLS(t, mk("agentB", ca).ServerConfig(), rogueScript(t)) // agentB's identity, other name

	h := startAggregator(t, func(c *Config) { c.Token = "tok"; c.TLS = mk("aggr", ca) })
	if h.a.cfg.Trust != TrustMTLS {
		t.Fatalf("trust %v with TLS", h.a.cfg.Trust)
	}
	cn, _ := startNode(t, "aggr", cluster.RoleAggregator, 1, nil)
	cn.AddHandler(h.a)
	startNode(t, "rogue", cluster.RoleAgent, portOf(t, rogueTLS.srv.URL), nil, seedOf(cn))
	startNode(t, "thief", cluster.RoleAgent, portOf(t, thief.srv.URL), nil, seedOf(cn))
	startNode(t, "agentB", cluster.RoleAgent, portOf(t, b.srv.URL), nil, seedOf(cn))

	waitMirrors(t, h.g, b)
	if got := b.requests()[0].Get("Authorization"); got != "Bearer tok" {
		t.Errorf("member over mTLS got Authorization %q", got)
	}
	eventually(t, 10*time.Second, "rogues rejected", func() (bool, string) {
		st := h.a.Status()
		rejected := map[string]string{}
		for _, s := range st {
			if s.State == stateRejected {
				rejected[s.Name] = s.Reason
			}
		}
		return len(rejected) == 2 &&
			testutil.ToFloat64(h.a.met.rejections.WithLabelValues(rejectTLS)) >= 1 &&
			testutil.ToFloat64(h.a.met.rejections.WithLabelValues(rejectIdentity)) >= 1, fmt.Sprintf("%+v", st)
	})
	assertNothingFrom(t, h, rogueTLS, "rogue")
	assertNothingFrom(t, h, thief, "thief")
}

// TestOpenClusterSendsNoToken: without a gossip key or TLS nothing proves
// membership, so no member gets the token; the aggregator's own agent does.
func TestOpenClusterSendsNoToken(t *testing.T) {
	self := startLiveAgent(t, "aggr", nil)
	other := startLiveAgent(t, "agentB", func(c *api.Config) { c.Token = "" })
	for _, l := range []*liveAgent{self, other} {
		k := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
		l.g.SetRoute(k, hopsOf(hA, leaf1, sp1, leaf2, hB))
		addSamples(l.g, k, 0, 5, 0)
	}
	h := startAggregator(t, func(c *Config) { c.Token = "tok"; c.Trust = TrustOpen; c.Self = "aggr" })
	h.a.AddMember("aggr", self.srv.URL)
	h.a.AddMember("agentB", other.srv.URL)
	waitMirrors(t, h.g, self)
	waitMirrors(t, h.g, other)
	if got := self.requests()[0].Get("Authorization"); got != "Bearer tok" {
		t.Errorf("own agent got Authorization %q", got)
	}
	if got := other.requests()[0].Get("Authorization"); got != "" {
		t.Errorf("member of an open cluster got Authorization %q", got)
	}
}

func poolOf(t *testing.T, ca *testcert.CA) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}
