package graph

import (
	"encoding/binary"
	"net/netip"
)

// Router-level paths, stored once (issue 10: the aggregator's memory grows
// with the fabric's paths, not with N²).
//
// A route is its two endpoints (node entries) and the hops between them,
// its router-level path. Every route of a fabric path, whichever hosts it
// joins, shares one fabricPath: at N = 1 000 agents the aggregator's
// 275 k routes cross 63 k distinct paths. A path is its nodes' numbers
// (nodeEntry.num, reused after a node goes), 4 bytes a hop; the full hop
// list is built only when asked (snapshots, events, path changes), from
// the graph's table of node IDs by number.
//
// The numbers also let a health run hand the estimator numbers instead of
// names to hash.

// fabricPath is the hops of a route between its endpoints. Shared, never
// modified.
type fabricPath struct {
	key  string // the nodes' numbers, 4 bytes each, little endian: its paths map key
	refs int    // routes on it
}

// len is how many hops p has.
func (p *fabricPath) len() int { return len(p.key) / 4 }

// num is the number of p's hop i.
func (p *fabricPath) num(i int) int32 {
	k := p.key[4*i : 4*i+4]
	return int32(uint32(k[0]) | uint32(k[1])<<8 | uint32(k[2])<<16 | uint32(k[3])<<24)
}

// refPathLocked returns the shared path of via (node IDs whose entries
// exist) and takes a reference on it.
func (g *Graph) refPathLocked(via []string) *fabricPath {
	b := g.pathBuf[:0]
	for _, h := range via {
		b = binary.LittleEndian.AppendUint32(b, uint32(g.nodes[h].num))
	}
	g.pathBuf = b
	p := g.paths[string(b)]
	if p == nil {
		p = &fabricPath{key: string(b)}
		g.paths[p.key] = p
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

// numberNodeLocked gives a new node entry its number. A number is not
// reused while a path has it: a path's routes hold their nodes.
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

// routeRare is what few imported routes need: src and dst when they are
// not the endpoint nodes' addresses (an endpoint named otherwise than by
// its address), and keys that are not all flows of src→dst.
type routeRare struct {
	ends     bool
	src, dst netip.Addr
	keys     []RouteKey
}

// srcAddr is the route's source host.
func (r *routeEntry) srcAddr() netip.Addr {
	if r.rare != nil && r.rare.ends {
		return r.rare.src
	}
	return r.from.node.Addr
}

// dstAddr is the route's destination host.
func (r *routeEntry) dstAddr() netip.Addr {
	if r.rare != nil && r.rare.ends {
		return r.rare.dst
	}
	return r.to.node.Addr
}

// importedKeyList is an imported route's keys when they are not ports
// only (compact.go), else nil.
func (r *routeEntry) importedKeyList() []RouteKey {
	if r.rare == nil {
		return nil
	}
	return r.rare.keys
}

// setImportedKeyList makes ks an imported route's key list (nil: none).
func (r *routeEntry) setImportedKeyList(ks []RouteKey) {
	switch {
	case r.rare != nil:
		r.rare.keys = ks
		if ks == nil && !r.rare.ends {
			r.rare = nil
		}
	case ks != nil:
		r.rare = &routeRare{keys: ks}
	}
}

// nHops is how many hops r has, endpoints included.
func (r *routeEntry) nHops() int { return r.path.len() + 2 }

// hopAtLocked is r's hop i (a node ID, the node's own string), endpoints
// included.
func (g *Graph) hopAtLocked(r *routeEntry, i int) string {
	switch {
	case i == 0:
		return r.from.node.ID
	case i <= r.path.len():
		return g.nodeNames[r.path.num(i-1)]
	}
	return r.to.node.ID
}

// hopListLocked is r's hops, endpoints included, in a new slice.
func (g *Graph) hopListLocked(r *routeEntry) []string {
	out := make([]string, r.nHops())
	for i := range out {
		out[i] = g.hopAtLocked(r, i)
	}
	return out
}

// sameHopsLocked reports whether r's hops are hops.
func (g *Graph) sameHopsLocked(r *routeEntry, hops []string) bool {
	if len(hops) != r.nHops() {
		return false
	}
	for i, h := range hops {
		if g.hopAtLocked(r, i) != h {
			return false
		}
	}
	return true
}

// appendHopNums appends r's hops as node numbers.
func (r *routeEntry) appendHopNums(dst []int32) []int32 {
	dst = append(dst, r.from.num)
	for i := range r.path.len() {
		dst = append(dst, r.path.num(i))
	}
	return append(dst, r.to.num)
}
