package graph

import "github.com/dnms/dnms/internal/localize"

// SetOriginStale marks the routes imported from origin as stale (true) or
// fresh again (false). The aggregator marks a member stale while it hears
// nothing from it: a stream that a dead link black-holes stalls without an
// error, and what the member sent before is no longer what its probes see.
//
// A stale route stays in the graph and in snapshots, and its hop list
// still names the path of the acks of the routes whose reverse it is; but
// health leaves its own samples out. Counting them would take the frozen,
// pre-fault picture as evidence about now: in the lab, a member's clean
// samples through spine→leaf, frozen when the downed link cut its stream,
// acquitted the dead direction and put its losses on the healthy one.
func (g *Graph) SetOriginStale(origin string, stale bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.staleOrigins[origin] == stale {
		return
	}
	if stale {
		if g.staleOrigins == nil {
			g.staleOrigins = make(map[string]bool)
		}
		g.staleOrigins[origin] = true
	} else {
		delete(g.staleOrigins, origin)
	}
	g.staleGen++
}

// OriginStale reports whether origin's routes are marked stale.
func (g *Graph) OriginStale(origin string) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.staleOrigins[origin]
}

// staleLocked reports whether r's samples are left out of health. Under
// g.mu (read or write).
func (g *Graph) staleLocked(r *routeEntry) bool {
	return !r.local && len(g.staleOrigins) > 0 && g.staleOrigins[r.originName()]
}

// withoutEvidence is x with its hops and ports (what reverse matching
// reads) but no samples and no delay excess.
func withoutEvidence(x localize.Input) localize.Input {
	return localize.Input{Hops: x.Hops, Nodes: x.Nodes, Ports: x.Ports}
}
