package localize

import (
	"cmp"
	"slices"
)

// index numbers nodes and links. Links are numbered in (src, dst) node-name
// order, so the result of Run does not depend on the order of its input.
type index struct {
	names []string // node names, sorted
	// hop p's nodes are nodes[hopOff[p]:hopOff[p+1]].
	nodes  []int32
	hopOff []int32
	// route p crosses links[linkOff[p]:linkOff[p+1]] (each link once).
	links   []int32
	linkOff []int32
	// linkEnds[l] is src<<32 | dst of link l.
	linkEnds []uint64
}

func (ix *index) nLinks() int              { return len(ix.linkEnds) }
func (ix *index) routeLinks(p int) []int32 { return ix.links[ix.linkOff[p]:ix.linkOff[p+1]] }
func (ix *index) ends(p int) (src, dst int32) {
	return ix.nodes[ix.hopOff[p]], ix.nodes[ix.hopOff[p+1]-1]
}
func (ix *index) linkName(l int) (src, dst string) {
	k := ix.linkEnds[l]
	return ix.names[k>>32], ix.names[k&0xffffffff]
}

// sortedPerm returns the permutation of 0..n-1 that sorts by less, and its
// inverse (rank[i] is where i goes).
func sortedPerm(n int, compare func(a, b int32) int) (perm, rank []int32) {
	perm = make([]int32, n)
	for i := range perm {
		perm[i] = int32(i)
	}
	slices.SortFunc(perm, compare)
	rank = make([]int32, n)
	for r, i := range perm {
		rank[i] = int32(r)
	}
	return perm, rank
}

// renumber maps every id in ids through rank.
func renumber(ids, rank []int32) {
	for i, id := range ids {
		ids[i] = rank[id]
	}
}

// indexNodes interns the hop names of every route, numbered in name order.
// With names, the routes' hops are Input.Nodes, numbers into names.
func indexNodes(in []Input, names []string) *index {
	ix := &index{hopOff: make([]int32, len(in)+1)}
	total := 0
	for i := range in {
		total += in[i].hopCount()
	}
	ix.nodes = make([]int32, 0, total)
	if names != nil {
		ix.numberedNodes(in, names)
	} else {
		ix.namedNodes(in)
	}
	ix.hopOff[len(in)] = int32(len(ix.nodes))
	perm, rank := sortedPerm(len(ix.names), func(a, b int32) int { return cmp.Compare(ix.names[a], ix.names[b]) })
	renumber(ix.nodes, rank)
	sorted := make([]string, len(perm))
	for r, id := range perm {
		sorted[r] = ix.names[id]
	}
	ix.names = sorted
	return ix
}

// namedNodes numbers the routes' Hops in order of appearance.
func (ix *index) namedNodes(in []Input) {
	seen := make(map[string]int32)
	for p, r := range in {
		ix.hopOff[p] = int32(len(ix.nodes))
		for _, h := range r.Hops {
			id, ok := seen[h]
			if !ok {
				id = int32(len(ix.names))
				seen[h] = id
				ix.names = append(ix.names, h)
			}
			ix.nodes = append(ix.nodes, id)
		}
	}
}

// numberedNodes renumbers the routes' Nodes (numbers into names, which may
// have gaps) densely in order of appearance: a table lookup per hop, no
// hashing.
func (ix *index) numberedNodes(in []Input, names []string) {
	dense := make([]int32, len(names)) // caller's number → dense number + 1
	for p := range in {
		ix.hopOff[p] = int32(len(ix.nodes))
		for _, n := range in[p].Nodes {
			id := dense[n] - 1
			if id < 0 {
				id = int32(len(ix.names))
				dense[n] = id + 1
				ix.names = append(ix.names, names[n])
			}
			ix.nodes = append(ix.nodes, id)
		}
	}
}

// indexLinks lists every route's links (a looping trace crosses a link once
// for our purpose) and numbers them in (src, dst) order. names is
// indexNodes's.
func indexLinks(in []Input, names []string) *index {
	ix := indexNodes(in, names)
	seen := make(map[uint64]int32, len(ix.names)*4)
	ix.linkOff = make([]int32, len(in)+1)
	ix.links = make([]int32, 0, len(ix.nodes))
	for p := range in {
		ix.linkOff[p] = int32(len(ix.links))
		start := len(ix.links)
		hs := ix.nodes[ix.hopOff[p]:ix.hopOff[p+1]]
		for j := 1; j < len(hs); j++ {
			k := uint64(hs[j-1])<<32 | uint64(hs[j])
			id, ok := seen[k]
			if !ok {
				id = int32(len(ix.linkEnds))
				seen[k] = id
				ix.linkEnds = append(ix.linkEnds, k)
			}
			if !slices.Contains(ix.links[start:], id) {
				ix.links = append(ix.links, id)
			}
		}
	}
	ix.linkOff[len(in)] = int32(len(ix.links))
	_, rank := sortedPerm(len(ix.linkEnds), func(a, b int32) int { return cmp.Compare(ix.linkEnds[a], ix.linkEnds[b]) })
	renumber(ix.links, rank)
	slices.Sort(ix.linkEnds)
	return ix
}
