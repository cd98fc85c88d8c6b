package aggregator

import (
	"net/netip"

	"github.com/dnms/dnms/internal/graph"
)

// straddlesRestart reports whether r runs to or from this node and its
// samples began before this process started. Such a route's losses may be
// the pings that went unanswered while this node was down, not the links:
// it is imported without metrics until its origin's window starts after
// our start (the origin's agent also empties it when it sees us restart,
// cluster.Restarter), so the estimator does not judge from it.
func (a *Aggregator) straddlesRestart(r graph.Route) bool {
	src, _ := netip.ParseAddr(r.Hops[0])
	dst, _ := netip.ParseAddr(r.Hops[len(r.Hops)-1])
	return a.straddles(src, dst, r.Metrics)
}

// straddles is straddlesRestart for a route from src to dst with metrics m
// (a route-batch entry).
func (a *Aggregator) straddles(src, dst netip.Addr, m graph.Metrics) bool {
	self, started := a.cfg.SelfAddr.Unmap(), a.cfg.Started
	if !self.IsValid() || started.IsZero() || m.Samples == 0 || m.Since.IsZero() {
		return false
	}
	if src.Unmap() != self && dst.Unmap() != self {
		return false
	}
	return m.Since.Before(started)
}
