package graph

import (
	"net/netip"
	"slices"
)

// Compact storage of imported routes (the aggregator holds every member's
// routes: ~1.7 N² at N agents).
//
// An imported route has no sample rings, so it keeps its keys as one
// sorted slice (routeEntry.keyList, replaced, never modified) instead of a
// map of keys to nil rings. Its origin's index finds the route a key is on
// through the key's (src, dst) pair: the keys of one flow pair spread over
// a handful of routes (one per path), so a lookup scans a couple of short
// sorted key lists instead of hashing into a map with an entry per key.
// Hop strings are the graph's node IDs (createLocked interns them), the
// route id shares the bytes of its internal key and every route of an
// origin shares the origin string.

// flowPair is the (src, dst) of a key.
type flowPair struct{ src, dst netip.Addr }

func pairOf(k RouteKey) flowPair { return flowPair{k.Src, k.Dst} }

// originIndex is one origin's imported routes by the flow pairs of their
// keys: a route is listed under every pair one of its keys has. Each key
// is on at most one of the origin's routes.
type originIndex struct {
	name  string // the origin, shared by its routes
	pairs map[flowPair][]*routeEntry
}

func newOriginIndex(name string) *originIndex {
	return &originIndex{name: name, pairs: make(map[flowPair][]*routeEntry)}
}

// find returns the route k is on, or nil.
func (x *originIndex) find(k RouteKey) *routeEntry {
	for _, r := range x.pairs[pairOf(k)] {
		if r.hasImportedKey(k) {
			return r
		}
	}
	return nil
}

// list puts r under pair p (once).
func (x *originIndex) list(r *routeEntry, p flowPair) {
	rs := x.pairs[p]
	if !slices.Contains(rs, r) {
		x.pairs[p] = append(rs, r)
	}
}

// unlist removes r from pair p.
func (x *originIndex) unlist(r *routeEntry, p flowPair) {
	rs := x.pairs[p]
	i := slices.Index(rs, r)
	if i < 0 {
		return
	}
	if len(rs) == 1 {
		delete(x.pairs, p)
		return
	}
	// A new backing array: no slice of the old one is kept anywhere, but
	// shrinking keeps it small.
	x.pairs[p] = slices.Delete(slices.Clone(rs), i, i+1)
}

// setKeys makes want (sorted, without duplicates) r's key set and lists r
// under want's pairs. r must already have lost every key not in want.
func (x *originIndex) setKeys(r *routeEntry, want []RouteKey) {
	r.keyList = want
	for i, k := range want {
		if i == 0 || pairOf(want[i-1]) != pairOf(k) {
			x.list(r, pairOf(k))
		}
	}
}

// delKey takes k off r, and r off k's pair when no other key of r has it.
func (x *originIndex) delKey(r *routeEntry, k RouteKey) {
	r.delKey(k)
	p := pairOf(k)
	for _, o := range r.keyList {
		if pairOf(o) == p {
			return
		}
	}
	x.unlist(r, p)
}

// drop unlists r from every pair of its keys (r is being removed).
func (x *originIndex) drop(r *routeEntry) {
	for i, k := range r.keyList {
		if i == 0 || pairOf(r.keyList[i-1]) != pairOf(k) {
			x.unlist(r, pairOf(k))
		}
	}
}

// hasImportedKey reports whether k is in an imported route's sorted key
// list.
func (r *routeEntry) hasImportedKey(k RouteKey) bool {
	_, ok := slices.BinarySearchFunc(r.keyList, k, compareKeys)
	return ok
}

// sortedKeySet returns ks sorted without duplicates, in a new slice.
func sortedKeySet(ks []RouteKey) []RouteKey {
	out := slices.Clone(ks)
	slices.SortFunc(out, compareKeys)
	return slices.Compact(out)
}
