package aggregator

import "github.com/dnms/dnms/internal/graph"

// straddlesRestart reports whether r runs to or from this node and its
// samples began before this process started. Such a route's losses may be
// the pings that went unanswered while this node was down, not the links:
// it is imported without metrics until its origin's window starts after
// our start (the origin's agent also empties it when it sees us restart,
// cluster.Restarter), so the estimator does not judge from it.
func (a *Aggregator) straddlesRestart(r graph.Route) bool {
	self, started := a.cfg.SelfAddr, a.cfg.Started
	if !self.IsValid() || started.IsZero() || r.Metrics.Samples == 0 || r.Metrics.Since.IsZero() {
		return false
	}
	s := self.Unmap().String()
	if r.Hops[0] != s && r.Hops[len(r.Hops)-1] != s {
		return false
	}
	return r.Metrics.Since.Before(started)
}
