package plan

import (
	"net/netip"

	"github.com/dnms/dnms/internal/graph"
)

// Coverage is how well the routes cover one directed link: Routes through
// it, and Sources, the distinct hosts whose routes cross the link in either
// direction (the cable). A link is identifiable once it carries several
// routes from several sources: a link seen from one source only cannot be
// told apart from that source's other links.
type Coverage struct {
	Routes  int `json:"routes"`
	Sources int `json:"sources"`
}

// Covered reports whether c meets the plan's cluster-wide goal: at least 3
// routes from at least 2 sources.
func (c Coverage) Covered() bool { return c.Routes >= 3 && c.Sources >= 2 }

// LinkCoverage computes the coverage of every link the routes cross. A
// route with several keys (source ports on the same hops) counts once.
func LinkCoverage(routes []graph.Route) map[graph.LinkID]Coverage {
	var t Tally
	for _, r := range routes {
		t.Add(r.Src, r.Hops)
	}
	return t.Coverage()
}

// Tally counts routes and sources per link, one route at a time (the
// property tests and the scale harness feed it millions of routes).
type Tally struct {
	count map[graph.LinkID]int
	srcs  map[graph.LinkID]map[netip.Addr]struct{} // keyed by the cable's canonical direction
}

// Add counts one route from src over hops.
func (t *Tally) Add(src netip.Addr, hops []string) {
	if t.count == nil {
		t.count = make(map[graph.LinkID]int)
		t.srcs = make(map[graph.LinkID]map[netip.Addr]struct{})
	}
	for i := 0; i+1 < len(hops); i++ {
		l := graph.LinkID{Src: hops[i], Dst: hops[i+1]}
		t.count[l]++
		c := cable(l)
		if t.srcs[c] == nil {
			t.srcs[c] = make(map[netip.Addr]struct{})
		}
		t.srcs[c][src] = struct{}{}
	}
}

// Coverage returns the coverage of every link counted so far.
func (t *Tally) Coverage() map[graph.LinkID]Coverage {
	out := make(map[graph.LinkID]Coverage, len(t.count))
	for l, n := range t.count {
		out[l] = Coverage{Routes: n, Sources: len(t.srcs[cable(l)])}
	}
	return out
}

func cable(l graph.LinkID) graph.LinkID {
	if l.Dst < l.Src {
		return graph.LinkID{Src: l.Dst, Dst: l.Src}
	}
	return l
}
