package graph

import (
	"hash/maphash"
	"net/netip"
	"slices"
)

// Compact storage of imported routes (the aggregator holds every member's
// routes: ~1.7 N² at N agents).
//
// An imported route has no sample rings, so it keeps its keys as one
// sorted slice instead of a map of keys to nil rings: when every key is a
// flow of the route's own src and dst (the rule: a route is one flow
// pair's path), only their source ports (routeEntry.ports), else the keys
// (routeEntry.importedKeyList). Both are replaced, never modified.
//
// Its origin's index finds the route a key is on through a hash of the
// key's (src, dst) pair: the keys of one flow pair spread over a handful
// of routes (one per path), so a lookup scans a couple of short sorted key
// lists instead of hashing into a map with an entry per key, and the
// map's key is 8 bytes, not the pair's 48. Routes of pairs whose hashes
// collide share a list; the key check sorts them out.
//
// Hops are the endpoint nodes and a router-level path shared by every
// route over the same routers (paths.go); the route id is the tail of its
// internal key and the origin is its index's name.

// flowPair is the (src, dst) of a key.
type flowPair struct{ src, dst netip.Addr }

func pairOf(k RouteKey) flowPair { return flowPair{k.Src, k.Dst} }

// originIndex is one origin's imported routes by the hashed flow pairs of
// their keys: a route is listed under the hash of every pair one of its
// keys has. Each key is on at most one of the origin's routes.
type originIndex struct {
	name  string // the origin, shared by its routes
	seed  maphash.Seed
	pairs map[uint64][]*routeEntry
}

func newOriginIndex(name string) *originIndex {
	return &originIndex{name: name, seed: maphash.MakeSeed(), pairs: make(map[uint64][]*routeEntry)}
}

func (x *originIndex) hash(p flowPair) uint64 { return pairHash(x.seed, p) }

// pairHash hashes a flow pair (a variable so a test can make every pair
// collide).
var pairHash = maphash.Comparable[flowPair]

// find returns the route k is on, or nil.
func (x *originIndex) find(k RouteKey) *routeEntry {
	for _, r := range x.pairs[x.hash(pairOf(k))] {
		if r.hasImportedKey(k) {
			return r
		}
	}
	return nil
}

// list puts r under pair p's hash (once).
func (x *originIndex) list(r *routeEntry, p flowPair) {
	h := x.hash(p)
	rs := x.pairs[h]
	if !slices.Contains(rs, r) {
		x.pairs[h] = append(rs, r)
	}
}

// unlist removes r from pair p's hash.
func (x *originIndex) unlist(r *routeEntry, p flowPair) {
	h := x.hash(p)
	rs := x.pairs[h]
	i := slices.Index(rs, r)
	if i < 0 {
		return
	}
	if len(rs) == 1 {
		delete(x.pairs, h)
		return
	}
	// A new backing array: no slice of the old one is kept anywhere, but
	// shrinking keeps it small.
	x.pairs[h] = slices.Delete(slices.Clone(rs), i, i+1)
}

// setKeys makes want (sorted, without duplicates) r's key set and lists r
// under want's pairs. r must already have lost every key not in want.
func (x *originIndex) setKeys(r *routeEntry, want []RouteKey) {
	r.setImportedKeys(want)
	for i, k := range want {
		if i == 0 || pairOf(want[i-1]) != pairOf(k) {
			x.list(r, pairOf(k))
		}
	}
}

// delKey takes k off r, and r off k's pair's hash when no other key of r
// has a pair with that hash.
func (x *originIndex) delKey(r *routeEntry, k RouteKey) {
	r.delKey(k)
	p := pairOf(k)
	h := x.hash(p)
	if r.ports != nil && x.hash(flowPair{r.srcAddr(), r.dstAddr()}) == h {
		return
	}
	kl := r.importedKeyList()
	for i, o := range kl {
		if (i == 0 || pairOf(kl[i-1]) != pairOf(o)) && x.hash(pairOf(o)) == h {
			return
		}
	}
	x.unlist(r, p)
}

// drop unlists r from every pair of its keys (r is being removed).
func (x *originIndex) drop(r *routeEntry) {
	if r.ports != nil {
		x.unlist(r, flowPair{r.srcAddr(), r.dstAddr()})
		return
	}
	kl := r.importedKeyList()
	for i, k := range kl {
		if i == 0 || pairOf(kl[i-1]) != pairOf(k) {
			x.unlist(r, pairOf(k))
		}
	}
}

// setImportedKeys makes want (sorted, without duplicates) an imported
// route's key set, as ports when every key is a flow of the route's pair.
func (r *routeEntry) setImportedKeys(want []RouteKey) {
	r.ports = nil
	r.setImportedKeyList(nil)
	if len(want) == 0 {
		return
	}
	for _, k := range want {
		if k.Src != r.srcAddr() || k.Dst != r.dstAddr() {
			r.setImportedKeyList(want)
			return
		}
	}
	r.ports = make([]uint16, len(want))
	for i, k := range want {
		r.ports[i] = k.SrcPort
	}
}

// importedKeys returns an imported route's sorted keys (made from the
// ports in the compact form). The slice is shared: callers must not modify
// it.
func (r *routeEntry) importedKeys() []RouteKey {
	if r.ports == nil {
		return r.importedKeyList()
	}
	ks := make([]RouteKey, len(r.ports))
	for i, p := range r.ports {
		ks[i] = RouteKey{Src: r.srcAddr(), Dst: r.dstAddr(), SrcPort: p}
	}
	return ks
}

// hasImportedKey reports whether k is one of an imported route's keys.
func (r *routeEntry) hasImportedKey(k RouteKey) bool {
	if r.ports != nil {
		if k.Src != r.srcAddr() || k.Dst != r.dstAddr() {
			return false
		}
		_, ok := slices.BinarySearch(r.ports, k.SrcPort)
		return ok
	}
	_, ok := slices.BinarySearchFunc(r.importedKeyList(), k, compareKeys)
	return ok
}

// delImportedKey takes k off an imported route.
func (r *routeEntry) delImportedKey(k RouteKey) {
	if r.ports != nil {
		if k.Src != r.srcAddr() || k.Dst != r.dstAddr() {
			return
		}
		if i, ok := slices.BinarySearch(r.ports, k.SrcPort); ok {
			r.ports = slices.Delete(slices.Clone(r.ports), i, i+1)
			if len(r.ports) == 0 {
				r.ports = nil
			}
		}
		return
	}
	kl := r.importedKeyList()
	if i, ok := slices.BinarySearchFunc(kl, k, compareKeys); ok {
		kl = slices.Delete(slices.Clone(kl), i, i+1)
		if len(kl) == 0 {
			kl = nil
		}
		r.setImportedKeyList(kl)
	}
}

// sortedKeySet returns ks sorted without duplicates, in a new slice.
func sortedKeySet(ks []RouteKey) []RouteKey {
	out := slices.Clone(ks)
	slices.SortFunc(out, compareKeys)
	return slices.Compact(out)
}
