package graph

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/localize"
)

// TestPathsShared: random imports and removals from several origins over
// a handful of router-level paths, with local routes (silent hops) too.
// After every step each route shows the hops it was given, routes over
// the same routers share one fabricPath whose count is theirs, no path
// outlives its routes, and node numbers name their nodes.
func TestPathsShared(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	host := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + i)}) }
	vias := [][]string{{"198.19.0.1"}, {"198.19.0.1", "198.19.1.1", "198.19.0.2"},
		{"198.19.0.1", "198.19.1.2", "198.19.0.2"}, {}, {"198.19.0.2", "198.19.0.1"}}
	g := New(DefaultConfig())
	for step := 0; step < 2000; step++ {
		o := rng.IntN(4)
		origin := host(o).String()
		switch op := rng.IntN(10); {
		case op == 0:
			g.RemoveOrigin(origin)
		case op < 2: // a member's batch: new metrics, some with per-key excess
			var batch []RouteMetrics
			for _, rt := range g.Snapshot().Routes {
				if rt.Origin == origin && rng.IntN(2) == 0 {
					m := Metrics{Samples: 20, Lost: rng.IntN(3), LostForward: rng.IntN(2)}
					if rng.IntN(2) == 0 {
						m.RTTExcessByKey = make([]float64, len(rt.Keys))
					}
					batch = append(batch, RouteMetrics{ID: rt.ID, Metrics: m})
				}
			}
			g.ImportMetrics(origin, batch)
		case op < 3:
			d := rng.IntN(6)
			g.RemoveImportedRoute(origin, RouteKey{Src: host(o), Dst: host(d), SrcPort: uint16(rng.IntN(3))})
		case op < 4: // a local route, silent hops and all
			d := 4 + rng.IntN(3)
			k := RouteKey{Src: host(o), Dst: host(d), SrcPort: uint16(rng.IntN(3))}
			var hs []Hop
			for _, v := range vias[rng.IntN(len(vias))] {
				a := netip.MustParseAddr(v)
				if rng.IntN(4) == 0 {
					a = netip.Addr{}
				}
				hs = append(hs, Hop{Addr: a})
			}
			g.SetRoute(k, hs)
		default:
			d := rng.IntN(6)
			if d == o {
				continue
			}
			hops := append(append([]string{origin}, vias[rng.IntN(len(vias))]...), host(d).String())
			var keys []RouteKey // 1–3 ports: a key moving here shrinks another route
			for range 1 + rng.IntN(3) {
				keys = append(keys, RouteKey{Src: host(o), Dst: host(d), SrcPort: uint16(rng.IntN(4))})
			}
			if rng.IntN(8) == 0 { // a key of another flow: the route keeps keys, not ports
				keys = append(keys, RouteKey{Src: host(o), Dst: host(5), SrcPort: 9})
			}
			g.ImportRoute(origin, Route{Hops: hops, Keys: keys, Metrics: Metrics{Samples: 10, Lost: rng.IntN(2)}})
		}
		g.mu.RLock()
		checkPaths(t, step, g)
		g.mu.RUnlock()
	}
	checkNumberedInputs(t, g)
}

// checkPaths checks the path and numbering invariants (under the lock).
func checkPaths(t *testing.T, step int, g *Graph) {
	t.Helper()
	refs := map[*fabricPath]int{}
	byKey := map[string]*fabricPath{}
	for _, r := range g.routes {
		hops := g.hopListLocked(r)
		for i, h := range hops {
			if n := g.nodes[h]; n == nil || n.node.ID != h || g.hopAtLocked(r, i) != h {
				t.Fatalf("step %d: route %s hop %d %q is not a node", step, r.ikey, i, h)
			}
		}
		if !g.sameHopsLocked(r, hops) || r.nHops() != len(hops) {
			t.Fatalf("step %d: route %s: hopList and sameHops disagree", step, r.ikey)
		}
		via := strings.Join(hops[1:len(hops)-1], " ")
		if p := byKey[via]; p != nil && p != r.path {
			t.Fatalf("step %d: routes over %v do not share their path", step, via)
		}
		byKey[via] = r.path
		refs[r.path]++
		nums := r.appendHopNums(nil)
		for i, n := range nums {
			if g.nodeNames[n] != hops[i] {
				t.Fatalf("step %d: route %s hop %d is number %d, named %q, want %q", step, r.ikey, i, n, g.nodeNames[n], hops[i])
			}
		}
	}
	checkSlots(t, step, g)
	if len(g.paths) != len(refs) {
		t.Fatalf("step %d: %d paths stored, routes use %d", step, len(g.paths), len(refs))
	}
	for _, p := range g.paths {
		if p.refs != refs[p] || g.paths[p.key] != p {
			t.Fatalf("step %d: path %q counts %d routes, has %d", step, p.key, p.refs, refs[p])
		}
	}
	seen := map[int32]bool{}
	for id, n := range g.nodes {
		if seen[n.num] || g.nodeNames[n.num] != id {
			t.Fatalf("step %d: node %q number %d named %q (or shared)", step, id, n.num, g.nodeNames[n.num])
		}
		seen[n.num] = true
	}
	if len(g.freeNums)+len(g.nodes) != len(g.nodeNames) {
		t.Fatalf("step %d: %d free + %d nodes != %d numbers", step, len(g.freeNums), len(g.nodes), len(g.nodeNames))
	}
	for _, n := range g.freeNums {
		if g.nodeNames[n] != "" || seen[n] {
			t.Fatalf("step %d: free number %d still named %q", step, n, g.nodeNames[n])
		}
	}
}

// checkSlots: every imported route's slot holds what the estimator would
// read of the route now, and nothing else has a slot.
func checkSlots(t *testing.T, step int, g *Graph) {
	t.Helper()
	imported, hops := 0, 0
	for _, r := range g.routes {
		hops += r.nHops()
		if r.local {
			if r.slot != -1 {
				t.Fatalf("step %d: local route %s has slot %d", step, r.ikey, r.slot)
			}
			continue
		}
		imported++
		if g.slots.of(r) == nil {
			t.Fatalf("step %d: route %s slot %d is not its own", step, r.ikey, r.slot)
		}
		want, _ := inputOf(nil, r.keysOf(), r.metricsOf(), nil)
		want.Nodes = r.appendHopNums(nil)
		got, _ := g.slots.of(r).input(nil)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: route %s slot input %+v, want %+v", step, r.ikey, got, want)
		}
	}
	if g.slots.len() != imported || g.hops != hops {
		t.Fatalf("step %d: %d slots for %d imported routes; %d hops counted, %d held", step, g.slots.len(), imported, g.hops, hops)
	}
}

// checkNumberedInputs: the health input with numbered hops ranks exactly
// as the same routes by name, in the same order.
func checkNumberedInputs(t *testing.T, g *Graph) {
	t.Helper()
	g.mu.RLock()
	names, in := g.healthInputsLocked(new(healthBuf))
	byName := make([]localize.Input, len(in))
	for i, x := range in {
		x.Hops = make([]string, len(x.Nodes))
		for j, n := range x.Nodes {
			x.Hops[j] = names[n]
		}
		byName[i] = x
		x.Nodes = nil
	}
	g.mu.RUnlock()
	if len(in) == 0 {
		t.Fatal("no routes left to rank")
	}
	got := localize.RunNumbered(names, in, g.cfg.Health)
	for i := range byName {
		byName[i].Nodes = nil
	}
	if want := localize.Run(byName, g.cfg.Health); !reflect.DeepEqual(got, want) {
		t.Fatalf("numbered rows differ from by-name rows:\n%s", firstDiff(got, want))
	}
	if err := sameRanking(g.Health(), localize.Run(g.healthInputsByName(g.hopLists()), g.cfg.Health)); err != nil {
		t.Fatal(err)
	}
}

func firstDiff(a, b []LinkHealth) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("row %d: %+v\nwant %+v", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("%d rows, want %d", len(a), len(b))
}

// TestRouteEndsNotNodeAddrs: a route whose endpoints are named otherwise
// than by their addresses keeps the src and dst it was given, and its
// keys (ports only) are found and removed by them.
func TestRouteEndsNotNodeAddrs(t *testing.T) {
	a, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	g := New(DefaultConfig())
	k := RouteKey{Src: a, Dst: b, SrcPort: 7}
	g.ImportRoute("o", Route{Src: a, Dst: b, Hops: []string{"host-a", "198.19.0.1", "host-b"}, Keys: []RouteKey{k}})
	g.ImportRoute("o", Route{Hops: []string{"198.18.0.1", "198.19.0.1", "198.18.0.2"}, Keys: []RouteKey{{Src: a, Dst: b, SrcPort: 8}}})
	s := g.Snapshot()
	if len(s.Routes) != 2 {
		t.Fatalf("%d routes, want 2", len(s.Routes))
	}
	for _, r := range s.Routes {
		if r.Src != a || r.Dst != b || len(r.Keys) != 1 || r.Keys[0].Src != a || r.Keys[0].Dst != b {
			t.Fatalf("route %v: src %v dst %v keys %v, want %v→%v", r.Hops, r.Src, r.Dst, r.Keys, a, b)
		}
	}
	g.mu.RLock()
	odd := 0
	for _, r := range g.routes {
		if r.rare != nil && r.rare.ends {
			odd++
		}
		if r.ports == nil {
			t.Errorf("route %s keeps keys, not ports", r.ikey)
		}
	}
	g.mu.RUnlock()
	if odd != 1 {
		t.Fatalf("%d routes store their ends, want 1 (the one named by host names)", odd)
	}
	g.RemoveImportedRoute("o", k)
	if s := g.Snapshot(); len(s.Routes) != 1 || s.Routes[0].Hops[0] != "198.18.0.1" {
		t.Fatalf("after removing key %v: %d routes", k, len(s.Routes))
	}
}
