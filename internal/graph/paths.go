package graph

import (
	"slices"
	"strings"
)

// Router-level paths, stored once (issue 10: the aggregator's memory grows
// with the fabric's paths, not with N²).
//
// A route is its two endpoints (node entries) and the hops between them,
// its router-level path. Every route of a fabric path, whichever hosts it
// joins, shares one fabricPath: at N = 1 000 agents the aggregator's
// 275 k routes cross a few tens of thousands of distinct paths. The full
// hop list is built only when asked (snapshots, events, path changes).
//
// Nodes are numbered (nodeEntry.num, reused after a node goes) so the
// health run hands the estimator numbers instead of names to hash.

// fabricPath is the hops of a route between its endpoints: node IDs (the
// nodes' own strings) and their numbers. Shared, never modified.
type fabricPath struct {
	key  string // via joined by "\x00": its paths map key
	via  []string
	nums []int32
	refs int // routes on it
}

// pathKey is the paths map key of the router-level path via.
func pathKey(via []string) string { return strings.Join(via, "\x00") }

// refPathLocked returns the shared path of via (node IDs whose entries
// exist) and takes a reference on it.
func (g *Graph) refPathLocked(via []string) *fabricPath {
	k := pathKey(via)
	p := g.paths[k]
	if p == nil {
		p = &fabricPath{key: k, via: make([]string, len(via)), nums: make([]int32, len(via))}
		for i, h := range via {
			n := g.nodes[h]
			p.via[i], p.nums[i] = n.node.ID, n.num
		}
		g.paths[k] = p
	}
	p.refs++
	return p
}

// unrefPathLocked drops a reference on p, and p when it was the last.
func (g *Graph) unrefPathLocked(p *fabricPath) {
	p.refs--
	if p.refs <= 0 && g.paths[p.key] == p {
		delete(g.paths, p.key)
	}
}

// numberNodeLocked gives a new node entry its number.
func (g *Graph) numberNodeLocked(n *nodeEntry) {
	if k := len(g.freeNums); k > 0 {
		n.num = g.freeNums[k-1]
		g.freeNums = g.freeNums[:k-1]
		g.nodeNames[n.num] = n.node.ID
		return
	}
	n.num = int32(len(g.nodeNames))
	g.nodeNames = append(g.nodeNames, n.node.ID)
}

// unnumberNodeLocked frees a removed node's number.
func (g *Graph) unnumberNodeLocked(n *nodeEntry) {
	g.nodeNames[n.num] = ""
	g.freeNums = append(g.freeNums, n.num)
}

// nHops is how many hops r has, endpoints included.
func (r *routeEntry) nHops() int { return len(r.path.via) + 2 }

// hopAt is r's hop i (a node ID), endpoints included.
func (r *routeEntry) hopAt(i int) string {
	switch {
	case i == 0:
		return r.from.node.ID
	case i <= len(r.path.via):
		return r.path.via[i-1]
	}
	return r.to.node.ID
}

// hopList is r's hops, endpoints included, in a new slice.
func (r *routeEntry) hopList() []string {
	out := make([]string, 0, r.nHops())
	out = append(out, r.from.node.ID)
	out = append(out, r.path.via...)
	return append(out, r.to.node.ID)
}

// sameHops reports whether r's hops are hops.
func (r *routeEntry) sameHops(hops []string) bool {
	return len(hops) == r.nHops() && hops[0] == r.from.node.ID &&
		hops[len(hops)-1] == r.to.node.ID && slices.Equal(hops[1:len(hops)-1], r.path.via)
}

// appendHopNums appends r's hops as node numbers.
func (r *routeEntry) appendHopNums(dst []int32) []int32 {
	dst = append(dst, r.from.num)
	dst = append(dst, r.path.nums...)
	return append(dst, r.to.num)
}
