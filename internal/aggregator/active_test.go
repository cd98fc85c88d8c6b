package aggregator

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/graph"
)

// topRows renders the first k health rows: link, verdict and suspicion.
func topRows(g *graph.Graph, k int) []string {
	rows := g.Health()
	out := make([]string, 0, k)
	for _, r := range rows[:min(k, len(rows))] {
		out = append(out, fmt.Sprintf("%s>%s %s %.4f", r.Src, r.Dst, r.Verdict, r.Suspicion))
	}
	return out
}

// TestActiveActive runs two aggregators at once (two -aggregator nodes in
// one real memberlist cluster on loopback) over the same four members,
// which stream batched metrics. Once both hold every member's routes they
// rank the links alike, with the lossy path on top; when the fault moves,
// both follow it and agree again.
func TestActiveActive(t *testing.T) {
	hA2 := netip.MustParseAddr("198.18.1.2")
	hB2 := netip.MustParseAddr("198.18.2.2")
	batched := func(name string) func(*api.Config) {
		return func(c *api.Config) {
			c.BatchInterval = 200 * time.Millisecond
			c.BatchPhase = api.BatchPhase(name, c.BatchInterval)
		}
	}
	type host struct {
		name string
		addr netip.Addr
		leaf netip.Addr
		role string
	}
	hosts := []host{
		{"aggr1", hA, leaf1, cluster.RoleAggregator},
		{"aggr2", hB, leaf2, cluster.RoleAggregator},
		{"agentC", hA2, leaf1, cluster.RoleAgent},
		{"agentD", hB2, leaf2, cluster.RoleAgent},
	}
	agents := make([]*liveAgent, len(hosts))
	// lossy says which of a member's routes lose every 10th sample.
	feed := func(from int, lossy func(src host, spine netip.Addr) bool) {
		for i, src := range hosts {
			for _, dst := range hosts {
				if dst.leaf == src.leaf {
					continue
				}
				for p, sp := range []netip.Addr{sp1, sp2} {
					k := graph.RouteKey{Src: src.addr, Dst: dst.addr, SrcPort: uint16(33436 + p)}
					if from == 0 {
						agents[i].g.SetRoute(k, hopsOf(src.addr, src.leaf, sp, dst.leaf, dst.addr))
					}
					loss := 0
					if lossy(src, sp) {
						loss = 10
					}
					addSamples(agents[i].g, k, from, 100, loss)
				}
			}
		}
	}
	for i, h := range hosts {
		agents[i] = startLiveAgent(t, h.name, batched(h.name))
	}
	// Fault 1: leaf1 hosts' routes through sp2 lose 10%.
	feed(0, func(src host, sp netip.Addr) bool { return src.leaf == leaf1 && sp == sp2 })

	h1 := startAggregator(t, func(c *Config) { c.Token = "tok" })
	h2 := startAggregator(t, func(c *Config) { c.Token = "tok" })
	var seed string
	for i, h := range hosts {
		var seeds []string
		if seed != "" {
			seeds = []string{seed}
		}
		c, _ := startNode(t, h.name, h.role, portOf(t, agents[i].srv.URL), nil, seeds...)
		if seed == "" {
			seed = seedOf(c)
		}
		switch h.name {
		case "aggr1":
			c.AddHandlerWithSelf(h1.a)
		case "aggr2":
			c.AddHandlerWithSelf(h2.a)
		}
	}
	for _, a := range agents {
		waitMirrors(t, h1.g, a)
		waitMirrors(t, h2.g, a)
	}
	for _, h := range []*harness{h1, h2} {
		if n := len(statusNames(h.a)); n != len(hosts) {
			t.Fatalf("an aggregator streams from %d members, want %d", n, len(hosts))
		}
	}

	agree := func(what string, onTop ...string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() (bool, string) {
			// Owed route updates go out, as the aggregator's graph.Run
			// does every second: the health cache follows the event id.
			h1.g.Flush()
			h2.g.Flush()
			r1, r2 := topRows(h1.g, 3), topRows(h2.g, 3)
			ok := len(r1) == 3 && slices.Equal(r1, r2) && slices.ContainsFunc(onTop, func(l string) bool { return strings.HasPrefix(r1[0], l+" ") })
			return ok, fmt.Sprintf("\naggr1 %v\naggr2 %v\nwant one of %v on top", r1, r2, onTop)
		})
		t.Logf("%s: both rank %v", what, topRows(h1.g, 3))
	}
	agree("both aggregators rank leaf1's sp2 path first", leaf1.String()+">"+sp2.String(), sp2.String()+">"+leaf2.String())

	// Fault 2: the loss moves to leaf2 hosts' routes through sp1.
	feed(100, func(src host, sp netip.Addr) bool { return src.leaf == leaf2 && sp == sp1 })
	for _, a := range agents {
		waitMirrors(t, h1.g, a)
		waitMirrors(t, h2.g, a)
	}
	agree("both follow the fault to leaf2's sp1 path", leaf2.String()+">"+sp1.String(), sp1.String()+">"+leaf1.String())
}
