package mapper

import "github.com/dnms/dnms/internal/probe"

// ProbeResult is what one round of probes found: one TTLAnswer per probe
// sent, in TTL order (a silent hop has a zero Addr; Dest marks the peer), and
// how many probes that took. These are probe's types, so that *probe.Engine
// is a Tracer as is.
type (
	ProbeResult = probe.ProbeResult
	TTLAnswer   = probe.TTLAnswer
)
