package graph

import (
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"unsafe"
)

// A random sequence of imports (keys moving between an origin's routes,
// keys whose flow pair is not the route's), key removals and origin
// removals leaves the graph's routes and the origin indexes agreeing with
// a plain model: origin -> key -> route id, and a route exists while it
// has a key.
func TestImportedIndexModel(t *testing.T) {
	t.Run("hashed", testImportedIndexModel)
	t.Run("colliding", func(t *testing.T) {
		defer func(h func(maphash.Seed, flowPair) uint64) { pairHash = h }(pairHash)
		pairHash = func(maphash.Seed, flowPair) uint64 { return 7 }
		testImportedIndexModel(t)
	})
}

func testImportedIndexModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 1))
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + i)}) }
	hopSets := [][]string{
		{"198.18.0.1", "198.18.1.1", "198.18.0.2"},
		{"198.18.0.1", "198.18.1.2", "198.18.0.2"},
		{"198.18.0.1", "198.18.1.1", "198.18.1.3", "198.18.0.2"},
		{"198.18.0.1", "*", "198.18.0.2"},
	}
	origins := []string{"a", "b", "c"}
	g := New(DefaultConfig())
	model := map[string]map[RouteKey]string{} // origin -> key -> route id
	for step := 0; step < 3000; step++ {
		o := origins[rng.IntN(len(origins))]
		if model[o] == nil {
			model[o] = map[RouteKey]string{}
		}
		switch op := rng.IntN(20); {
		case op == 0:
			g.RemoveOrigin(o)
			delete(model, o)
		case op < 6:
			var k RouteKey
			for k = range model[o] {
				break
			}
			if rng.IntN(4) == 0 { // a key no route has
				k = RouteKey{Src: addr(9), Dst: addr(8), SrcPort: 7}
			}
			g.RemoveImportedRoute(o, k)
			delete(model[o], k)
		default:
			hops := hopSets[rng.IntN(len(hopSets))]
			id := RouteID(hops)
			var keys []RouteKey
			for range 1 + rng.IntN(4) {
				// Mostly the route's own pair, sometimes another one.
				src, dst := addr(0), addr(1)
				if rng.IntN(5) == 0 {
					src, dst = addr(2+rng.IntN(2)), addr(4)
				}
				keys = append(keys, RouteKey{Src: src, Dst: dst, SrcPort: uint16(rng.IntN(6))})
			}
			for k, rid := range model[o] {
				if rid == id {
					delete(model[o], k)
				}
			}
			for _, k := range keys {
				model[o][k] = id
			}
			g.ImportRoute(o, Route{ID: id, Hops: nodeIDs(id, hops), Keys: keys})
		}
		if step%50 == 0 || step == 2999 {
			checkImportedModel(t, g, model, step)
		}
	}
}

func checkImportedModel(t *testing.T, g *Graph, model map[string]map[RouteKey]string, step int) {
	t.Helper()
	want := map[string][]RouteKey{} // origin/id -> keys
	for o, ks := range model {
		for k, id := range ks {
			want[o+"/"+id] = append(want[o+"/"+id], k)
		}
	}
	got := map[string][]RouteKey{}
	for _, r := range g.Snapshot().Routes {
		got[r.Origin+"/"+r.ID] = r.Keys
		if !slices.IsSortedFunc(r.Keys, compareKeys) {
			t.Fatalf("step %d: route %s/%s keys not sorted: %v", step, r.Origin, r.ID, r.Keys)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("step %d: %d routes, model %d:\n got %v\nwant %v", step, len(got), len(want), got, want)
	}
	for name, ks := range want {
		slices.SortFunc(ks, compareKeys)
		if !slices.Equal(got[name], ks) {
			t.Fatalf("step %d: route %s keys %v, model %v", step, name, got[name], ks)
		}
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	for o, x := range g.imported {
		for h, rs := range x.pairs {
			if len(rs) == 0 {
				t.Fatalf("step %d: origin %s pair hash %x listed with no route", step, o, h)
			}
			for _, r := range rs {
				if g.routes[r.ikey] != r || r.originName() != o {
					t.Fatalf("step %d: origin %s pair hash %x lists a removed or foreign route %s", step, o, h, r.ikey)
				}
				if !slices.ContainsFunc(r.importedKeys(), func(k RouteKey) bool { return x.hash(pairOf(k)) == h }) {
					t.Fatalf("step %d: route %s listed under pair hash %x without a key of it", step, r.ikey, h)
				}
			}
		}
		for k, id := range model[o] {
			r := x.find(k)
			if r == nil || r.routeID() != id {
				t.Fatalf("step %d: origin %s key %v: found %v, model %s", step, o, k, r, id)
			}
		}
	}
	for o := range model {
		if len(model[o]) > 0 && g.imported[o] == nil {
			t.Fatalf("step %d: origin %s has no index", step, o)
		}
	}
	// Every hop string is its node's own ID string.
	for _, r := range g.routes {
		for _, h := range g.hopListLocked(r) {
			n := g.nodes[h]
			if n == nil {
				t.Fatalf("step %d: route %s hop %q has no node", step, r.ikey, h)
			}
			if unsafe.StringData(n.node.ID) != unsafe.StringData(h) {
				t.Fatalf("step %d: route %s hop %q is a copy of its node's ID", step, r.ikey, h)
			}
		}
	}
}
