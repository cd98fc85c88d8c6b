package aggregator

import (
	"testing"

	"github.com/dnms/dnms/internal/graph"
)

// An agent that has mapped nothing yet serves an empty snapshot with event
// id 0. Its first events (id 1, 2, …) must apply: the stream is in sync
// even though no event id has been seen.
func TestEventsAfterEmptySnapshot(t *testing.T) {
	script := frame(t, "snapshot", 0, snap(0)) +
		frame(t, "route-add", 1, ev(graph.EventRouteAdd, rSp1)) +
		frame(t, "route-add", 2, ev(graph.EventRouteAdd, rSp2))
	f := newFakeAgent(t, script)
	h := startAggregator(t)
	h.a.AddMember("agentA", f.srv.URL+"/")
	waitRoutes(t, h.g, "agentA", rSp1, rSp2)
}
