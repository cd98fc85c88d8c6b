package ui

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/dnms/dnms/internal/graph"
)

// Layout places a graph's nodes in tiers, the way a network engineer draws a
// fabric: hosts in tier 0 at the bottom, first-hop routers (ToRs, leaves) in
// tier 1, then aggregation, spine or core tiers above. It is the JSON of
// /v1/graph/layout.
type Layout struct {
	// Tiers is the number of tiers (the highest Tier + 1).
	Tiers int `json:"tiers"`
	// Nodes are in tier order, then Order.
	Nodes []NodeLayout `json:"nodes"`
	// Links are the graph's directed links with their route counts (as in
	// /v1/graph/edges), so the page draws the fabric from this document
	// alone, before the routes arrive.
	Links []graph.Link `json:"edges"`
}

// NodeLayout is one node's place.
type NodeLayout struct {
	ID   string         `json:"id"`
	Kind graph.NodeKind `json:"kind"`
	// Tier is the node's hop distance from the nearest route endpoint:
	// the smallest min(i, n-1-i) over every position i it takes in a route
	// of n hops. Hosts are 0.
	Tier int `json:"tier"`
	// Order is the node's position within its tier, left to right: hosts
	// grouped by rack, racks in the order of their first-hop routers, and
	// every upper tier by the mean position of its neighbours below
	// (barycenter), so pods stay together and links rarely cross.
	Order int `json:"order"`
	// Rack is a host's first-hop router: the most common second hop of the
	// routes it sends and the second-last of those it receives (silent hops
	// do not count). Empty for routers and for hosts without a known one.
	Rack string `json:"rack,omitempty"`
}

// ComputeLayout assigns tiers and orders from a snapshot's routes and links.
func ComputeLayout(s graph.Snapshot) Layout {
	kind := make(map[string]graph.NodeKind, len(s.Nodes))
	for _, n := range s.Nodes {
		kind[n.ID] = n.Kind
	}
	tier := tiers(s, kind)
	racks := racksOf(s, kind)

	byTier := map[int][]string{}
	maxTier := 0
	for id, t := range tier {
		byTier[t] = append(byTier[t], id)
		maxTier = max(maxTier, t)
	}
	pos := map[string]float64{} // ordered nodes' x in [0,1)
	place := func(ids []string) {
		for i, id := range ids {
			pos[id] = (float64(i) + 0.5) / float64(len(ids))
		}
	}
	// Tier 1 by address, so racks come out in a stable, readable order;
	// silent placeholders after the routers.
	slices.SortFunc(byTier[1], compareNodeIDs)
	place(byTier[1])
	// Hosts by their rack's place, then by address.
	slices.SortFunc(byTier[0], func(a, b string) int {
		ra, oka := pos[racks[a]]
		rb, okb := pos[racks[b]]
		switch {
		case oka && okb && ra != rb:
			return cmp.Compare(ra, rb)
		case oka != okb: // hosts without a rack last
			if oka {
				return -1
			}
			return 1
		}
		return compareNodeIDs(a, b)
	})
	place(byTier[0])
	// Upper tiers by barycenter of their neighbours in lower tiers.
	below := neighboursBelow(s, tier)
	for t := 2; t <= maxTier; t++ {
		bary := map[string]float64{}
		for _, id := range byTier[t] {
			sum, n := 0.0, 0
			for _, nb := range below[id] {
				if p, ok := pos[nb]; ok {
					sum += p
					n++
				}
			}
			bary[id] = 0.5
			if n > 0 {
				bary[id] = sum / float64(n)
			}
		}
		slices.SortFunc(byTier[t], func(a, b string) int {
			if c := cmp.Compare(bary[a], bary[b]); c != 0 {
				return c
			}
			return compareNodeIDs(a, b)
		})
		place(byTier[t])
	}

	out := Layout{Nodes: make([]NodeLayout, 0, len(tier)), Links: s.Links}
	if out.Links == nil {
		out.Links = []graph.Link{}
	}
	if len(tier) > 0 {
		out.Tiers = maxTier + 1
	}
	for t := 0; t <= maxTier; t++ {
		for i, id := range byTier[t] {
			k := kind[id]
			if k == "" {
				k = graph.NodeRouter
			}
			out.Nodes = append(out.Nodes, NodeLayout{ID: id, Kind: k, Tier: t, Order: i, Rack: racks[id]})
		}
	}
	return out
}

// tiers is every node's hop distance from the nearest endpoint of the
// routes it is on. Hosts are tier 0 whatever their position; a router on
// no route (a link without routes) sits in tier 1.
func tiers(s graph.Snapshot, kind map[string]graph.NodeKind) map[string]int {
	tier := map[string]int{}
	set := func(id string, t int) {
		if kind[id] == graph.NodeHost {
			t = 0
		}
		if old, ok := tier[id]; !ok || t < old {
			tier[id] = t
		}
	}
	for _, r := range s.Routes {
		n := len(r.Hops)
		for i, id := range r.Hops {
			set(id, min(i, n-1-i))
		}
	}
	for _, nd := range s.Nodes {
		if _, ok := tier[nd.ID]; !ok {
			set(nd.ID, 1)
		}
	}
	for _, l := range s.Links {
		for _, id := range []string{l.Src, l.Dst} {
			if _, ok := tier[id]; !ok {
				set(id, 1)
			}
		}
	}
	return tier
}

// racksOf picks each host's first-hop router by majority over its routes.
func racksOf(s graph.Snapshot, kind map[string]graph.NodeKind) map[string]string {
	votes := map[string]map[string]int{}
	vote := func(host, router string) {
		if kind[router] == graph.NodeSilent || strings.HasPrefix(router, "*") || kind[router] == graph.NodeHost {
			return
		}
		if votes[host] == nil {
			votes[host] = map[string]int{}
		}
		votes[host][router]++
	}
	for _, r := range s.Routes {
		if n := len(r.Hops); n >= 3 {
			vote(r.Hops[0], r.Hops[1])
			vote(r.Hops[n-1], r.Hops[n-2])
		}
	}
	racks := map[string]string{}
	for host, vs := range votes {
		best, bestN := "", 0
		for r, n := range vs {
			if n > bestN || (n == bestN && compareNodeIDs(r, best) < 0) {
				best, bestN = r, n
			}
		}
		racks[host] = best
	}
	return racks
}

// neighboursBelow lists, for every node, the nodes in a lower tier it has a
// link with (either direction).
func neighboursBelow(s graph.Snapshot, tier map[string]int) map[string][]string {
	out := map[string][]string{}
	seen := map[[2]string]bool{}
	add := func(a, b string) {
		if tier[b] < tier[a] && !seen[[2]string{a, b}] {
			seen[[2]string{a, b}] = true
			out[a] = append(out[a], b)
		}
	}
	for _, l := range s.Links {
		add(l.Src, l.Dst)
		add(l.Dst, l.Src)
	}
	return out
}

// compareNodeIDs orders addresses numerically (IPv4 before IPv6), anything
// else by string, silent placeholders ("*...") last.
func compareNodeIDs(a, b string) int {
	sa, sb := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	if sa != sb {
		if sa {
			return 1
		}
		return -1
	}
	pa, erra := netip.ParseAddr(a)
	pb, errb := netip.ParseAddr(b)
	if erra == nil && errb == nil {
		return pa.Compare(pb)
	}
	if (erra == nil) != (errb == nil) {
		if erra == nil {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}
