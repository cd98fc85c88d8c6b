package mapper

import "github.com/dnms/dnms/internal/probe"

// TraceResult is what one trace found: Hops in TTL order (a silent hop has a
// zero Addr; when Reached the list may end with the peer), whether the peer
// answered, and how many probes it took. It is probe's type, so that
// *probe.Engine is a Tracer as is.
type TraceResult = probe.TraceResult
