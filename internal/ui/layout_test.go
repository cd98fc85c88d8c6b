package ui

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/dnms/dnms/internal/graph"
)

// fabric builds a graph from hop lists (addresses, "*" for a silent hop,
// endpoints included) through the graph's own SetRoute, so node kinds and
// silent placeholder IDs are the real ones.
func fabric(t *testing.T, paths [][]string) graph.Snapshot {
	t.Helper()
	g := graph.New(graph.DefaultConfig())
	for i, p := range paths {
		key := graph.RouteKey{Src: netip.MustParseAddr(p[0]), Dst: netip.MustParseAddr(p[len(p)-1]), SrcPort: uint16(40000 + i)}
		hops := make([]graph.Hop, len(p))
		for j, a := range p {
			if a != "*" {
				hops[j].Addr = netip.MustParseAddr(a)
			}
		}
		if id, _ := g.SetRoute(key, hops); id == "" {
			t.Fatalf("SetRoute %v refused", p)
		}
	}
	return g.Snapshot()
}

// clos generates every host pair's path over a Clos fabric: pods of ToRs
// under aggregation routers under cores (aggs == 0: a two-tier leaf-spine
// with cores as spines). ECMP picks uplinks by a hash of the pair.
func clos(pods, torsPerPod, aggsPerPod, cores, hostsPerTor int) (paths [][]string, tor map[string]string, tierOf map[string]int) {
	tor, tierOf = map[string]string{}, map[string]int{}
	var hosts []string
	torPod := map[string]int{}
	for p := 0; p < pods; p++ {
		for t := 0; t < torsPerPod; t++ {
			tr := fmt.Sprintf("198.19.%d.%d", p, t+1)
			torPod[tr], tierOf[tr] = p, 1
			for h := 0; h < hostsPerTor; h++ {
				ha := fmt.Sprintf("198.18.%d.%d", p*torsPerPod+t, h+1)
				hosts = append(hosts, ha)
				tor[ha], tierOf[ha] = tr, 0
			}
		}
	}
	agg := func(p, i int) string { a := fmt.Sprintf("198.19.%d.%d", 100+p, i+1); tierOf[a] = 2; return a }
	core := func(i int) string {
		c := fmt.Sprintf("198.19.200.%d", i+1)
		tierOf[c] = 3
		if aggsPerPod == 0 {
			tierOf[c] = 2
		}
		return c
	}
	for i, s := range hosts {
		for j, d := range hosts {
			if i == j {
				continue
			}
			h := i*7 + j*13
			ts, td := tor[s], tor[d]
			ps, pd := torPod[ts], torPod[td]
			switch {
			case ts == td:
				paths = append(paths, []string{s, ts, d})
			case aggsPerPod == 0:
				paths = append(paths, []string{s, ts, core(h % cores), td, d})
			case ps == pd:
				paths = append(paths, []string{s, ts, agg(ps, h%aggsPerPod), td, d})
			default:
				paths = append(paths, []string{s, ts, agg(ps, h%aggsPerPod), core(h % cores), agg(pd, (h/2)%aggsPerPod), td, d})
			}
		}
	}
	return paths, tor, tierOf
}

func layoutIndex(l Layout) map[string]NodeLayout {
	m := map[string]NodeLayout{}
	for _, n := range l.Nodes {
		m[n.ID] = n
	}
	return m
}

// checkClos asserts tiers, racks, and that hosts of one rack are contiguous
// in rack order.
func checkClos(t *testing.T, l Layout, tor map[string]string, tierOf map[string]int, wantTiers int) {
	t.Helper()
	idx := layoutIndex(l)
	if l.Tiers != wantTiers {
		t.Errorf("tiers = %d, want %d", l.Tiers, wantTiers)
	}
	if len(idx) != len(tierOf) {
		t.Errorf("layout has %d nodes, fabric %d", len(idx), len(tierOf))
	}
	for id, want := range tierOf {
		if got := idx[id]; got.Tier != want {
			t.Errorf("%s (%s): tier %d, want %d", id, got.Kind, got.Tier, want)
		}
	}
	for h, r := range tor {
		if idx[h].Rack != r {
			t.Errorf("host %s: rack %q, want %q", h, idx[h].Rack, r)
		}
	}
	// Walking hosts left to right, the rack's ToR order never decreases.
	last := -1
	for _, n := range l.Nodes {
		if n.Tier != 0 {
			continue
		}
		o := idx[n.Rack].Order
		if o < last {
			t.Errorf("host %s (rack %s, order %d) after a host of rack order %d: racks are not contiguous", n.ID, n.Rack, o, last)
		}
		last = o
	}
}

func TestLayoutLeafSpine(t *testing.T) {
	paths, tor, tierOf := clos(1, 4, 0, 2, 3)
	l := ComputeLayout(fabric(t, paths))
	checkClos(t, l, tor, tierOf, 3)
}

func TestLayoutThreeTierClos(t *testing.T) {
	paths, tor, tierOf := clos(2, 2, 2, 2, 2)
	l := ComputeLayout(fabric(t, paths))
	checkClos(t, l, tor, tierOf, 4)
	// Aggregation routers of pod 0 sit left of pod 1's: the barycenter
	// keeps pods under their ToRs.
	idx := layoutIndex(l)
	for _, a := range []string{"198.19.100.1", "198.19.100.2"} {
		for _, b := range []string{"198.19.101.1", "198.19.101.2"} {
			if idx[a].Order >= idx[b].Order {
				t.Errorf("pod 0 agg %s (order %d) not left of pod 1 agg %s (order %d)", a, idx[a].Order, b, idx[b].Order)
			}
		}
	}
	// Orders in each tier are 0..n-1.
	count := map[int]int{}
	for _, n := range l.Nodes {
		if n.Order != count[n.Tier] {
			t.Errorf("%s: order %d, want %d (nodes in tier order)", n.ID, n.Order, count[n.Tier])
		}
		count[n.Tier]++
	}
}

func TestLayoutSilentHops(t *testing.T) {
	// leaf-spine with 2 leaves; spine 198.19.200.2 never answers, and one
	// leaf's ICMP is rate-limited on one route.
	paths := [][]string{
		{"198.18.0.1", "198.19.0.1", "198.19.200.1", "198.19.0.2", "198.18.1.1"},
		{"198.18.0.1", "198.19.0.1", "*", "198.19.0.2", "198.18.1.1"},
		{"198.18.1.1", "198.19.0.2", "*", "198.19.0.1", "198.18.0.1"},
		{"198.18.1.1", "*", "198.19.200.1", "198.19.0.1", "198.18.0.1"},
	}
	s := fabric(t, paths)
	l := ComputeLayout(s)
	idx := layoutIndex(l)
	silent := map[int]int{}
	for _, n := range l.Nodes {
		if n.Kind == graph.NodeSilent {
			silent[n.Tier]++
			if n.ID[0] != '*' {
				t.Errorf("silent node %s has no placeholder ID", n.ID)
			}
		}
	}
	if silent[2] != 2 || silent[1] != 1 || len(silent) != 2 {
		t.Errorf("silent hops per tier %v, want 2 in tier 2 (spine position) and 1 in tier 1", silent)
	}
	if idx["198.19.200.1"].Tier != 2 || idx["198.19.0.1"].Tier != 1 || idx["198.18.1.1"].Tier != 0 {
		t.Errorf("named nodes misplaced: %+v", l.Nodes)
	}
	// The silent first hop does not become a rack.
	if r := idx["198.18.1.1"].Rack; r != "198.19.0.2" {
		t.Errorf("rack of 198.18.1.1 = %q, want 198.19.0.2", r)
	}
	// In tier 1 the routers come before the silent placeholder.
	if idx["198.19.0.2"].Order > 1 {
		t.Errorf("silent placeholder ordered before a router in tier 1: %+v", l.Nodes)
	}
}

func TestLayoutEmpty(t *testing.T) {
	l := ComputeLayout(graph.Snapshot{})
	if l.Tiers != 0 || len(l.Nodes) != 0 {
		t.Errorf("empty snapshot: %+v", l)
	}
}
