package mapper

import "github.com/dnms/dnms/internal/graph"

// TraceResult is what one trace found. Hops are in TTL order; a silent hop
// has a zero Addr. The list may end with the peer itself.
//
// TODO(mapper): becomes an alias of probe.TraceResult once the engine lands.
type TraceResult struct {
	Hops       []graph.Hop
	Reached    bool
	ProbesSent int
}
