package mapper

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"sync"
)

// maxFlows caps the stopping-rule search; no vertex in a real fabric needs
// more flows than this to be ruled out at any sane confidence.
const maxFlows = 100000

// missProbability is the probability that n flows, hashed uniformly over m
// next hops, fail to show at least one of them. It runs the occupancy
// distribution forward one flow at a time instead of the inclusion-exclusion
// sum, whose alternating terms lose precision for large m.
func missProbability(m, n int) float64 {
	if m <= 1 {
		if n <= 0 && m == 1 {
			return 1
		}
		return 0
	}
	if n < m {
		return 1
	}
	// p[j]: probability that exactly j distinct next hops have been seen.
	p := make([]float64, m+1)
	p[0] = 1
	for range n {
		for j := m; j >= 1; j-- {
			p[j] = p[j]*float64(j)/float64(m) + p[j-1]*float64(m-j+1)/float64(m)
		}
		p[0] = 0
	}
	return math.Max(0, 1-p[m])
}

// FlowsNeeded is the MDA stopping point n_k (Augustin et al., "Multipath
// tracing with Paris traceroute"): the number of flows that must cross a
// vertex where k distinct next hops were seen before k+1 next hops are ruled
// out at the given confidence, assuming a uniform load balancer. For 95% it
// gives 6, 11, 16, 21, 27, 33, … for k = 1, 2, 3, 4, 5, 6, …. k < 1 counts as 1.
// It returns maxFlows when confidence is not in (0, 1).
func FlowsNeeded(k int, confidence float64) int {
	if k < 1 {
		k = 1
	}
	if !(confidence > 0 && confidence < 1) {
		return maxFlows
	}
	key := nkKey{k, confidence}
	if n, ok := nkCache.Load(key); ok {
		return n.(int)
	}
	n := flowsNeeded(k, confidence)
	nkCache.Store(key, n)
	return n
}

type nkKey struct {
	k    int
	conf float64
}

// nkCache memoises FlowsNeeded: coverage asks for the same few values on
// every stored trace.
var nkCache sync.Map

func flowsNeeded(k int, confidence float64) int {
	alpha := 1 - confidence
	m := k + 1
	// Same recurrence as missProbability, stopping at the first n where the
	// chance of still missing one of k+1 next hops is at most alpha.
	p := make([]float64, m+1)
	p[0] = 1
	for n := 1; n <= maxFlows; n++ {
		for j := m; j >= 1; j-- {
			p[j] = p[j]*float64(j)/float64(m) + p[j-1]*float64(m-j+1)/float64(m)
		}
		p[0] = 0
		// A tiny epsilon keeps floating-point noise from moving a value that
		// sits exactly on alpha.
		if 1-p[m] <= alpha+1e-12 {
			return n
		}
	}
	return maxFlows
}

// HopBranching is one vertex of a peer's multipath graph as the mapper saw
// it: a hop address at a distance (position) from the source, how many of the
// traced flows crossed it, and the distinct next hops those flows took.
type HopBranching struct {
	Position int      `json:"position"` // 0 is the local host
	Addr     string   `json:"addr"`     // "*" for a silent hop
	Flows    int      `json:"flows"`
	NextHops []string `json:"nextHops"`
	// FlowsNeeded is n_k for k = len(NextHops): the flows that must cross
	// this vertex before a further next hop is ruled out at the configured
	// confidence.
	FlowsNeeded int  `json:"flowsNeeded"`
	Confident   bool `json:"confident"`
	// MissProbability is the chance that Flows flows over len(NextHops)+1
	// equally likely next hops would have missed one: how likely a next hop
	// this vertex still hides would have gone unseen.
	MissProbability float64 `json:"missProbability"`
}

// Coverage says how well a set of per-port routes covers a peer's paths.
type Coverage struct {
	Routes    int            `json:"routes"` // distinct hop lists
	Hops      []HopBranching `json:"hops"`
	Confident bool           `json:"confident"`
	FlowsUsed int            `json:"flowsUsed"` // ports with a route
	// FlowsNeeded estimates how many ports the range needs so that every
	// vertex gets its n_k flows, assuming flows keep splitting as observed.
	FlowsNeeded int `json:"flowsNeeded"`
	// MissProbability is the largest per-vertex MissProbability.
	MissProbability float64 `json:"missProbability"`
}

// silentAddr is how a silent hop is written in hop keys and the API.
const silentAddr = "*"

// coverage applies the MDA stopping rule to routes, one hop list per traced
// flow (source port), each written as hop addresses with silentAddr for a
// silent hop, endpoints included. A vertex is (position, address): silent
// hops at the same position share one vertex, which is what a router that
// never answers looks like from many flows.
func coverage(routes [][]string, confidence float64) Coverage {
	type vkey struct {
		pos  int
		addr string
	}
	type vertex struct {
		flows int
		next  map[string]struct{}
	}
	c := Coverage{FlowsUsed: len(routes)}
	if len(routes) == 0 {
		return c
	}
	distinct := make(map[string]struct{})
	vs := make(map[vkey]*vertex)
	for _, r := range routes {
		distinct[routeKeyString(r)] = struct{}{}
		// The last element is the destination: it has no next hop to rule
		// out.
		for i := 0; i+1 < len(r); i++ {
			k := vkey{i, r[i]}
			v := vs[k]
			if v == nil {
				v = &vertex{next: make(map[string]struct{})}
				vs[k] = v
			}
			v.flows++
			v.next[r[i+1]] = struct{}{}
		}
	}
	c.Routes = len(distinct)
	c.Confident = true
	for k, v := range vs {
		nh := make([]string, 0, len(v.next))
		for a := range v.next {
			nh = append(nh, a)
		}
		slices.Sort(nh)
		need := FlowsNeeded(len(nh), confidence)
		h := HopBranching{
			Position:        k.pos,
			Addr:            k.addr,
			Flows:           v.flows,
			NextHops:        nh,
			FlowsNeeded:     need,
			Confident:       v.flows >= need,
			MissProbability: missProbability(len(nh)+1, v.flows),
		}
		if !h.Confident {
			c.Confident = false
		}
		// Ports needed for this vertex to get its flows, if the share of
		// flows reaching it stays what it is now.
		total := int(math.Ceil(float64(need) * float64(len(routes)) / float64(v.flows)))
		c.FlowsNeeded = max(c.FlowsNeeded, total)
		c.MissProbability = max(c.MissProbability, h.MissProbability)
		c.Hops = append(c.Hops, h)
	}
	slices.SortFunc(c.Hops, func(a, b HopBranching) int {
		return cmp.Or(cmp.Compare(a.Position, b.Position), cmp.Compare(a.Addr, b.Addr))
	})
	return c
}

// routeKeyString joins hop addresses with a separator that cannot appear in
// an address, so distinct hop lists never collide.
func routeKeyString(r []string) string {
	n := 0
	for _, a := range r {
		n += len(a) + 1
	}
	b := make([]byte, 0, n+4)
	b = strconv.AppendInt(b, int64(len(r)), 10)
	for _, a := range r {
		b = append(b, '|')
		b = append(b, a...)
	}
	return string(b)
}
