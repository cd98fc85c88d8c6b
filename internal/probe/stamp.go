package probe

import "net/netip"

// Source names where a timestamp came from. Stamps from different sources are
// never subtracted from each other.
type Source string

const (
	SourceEBPF   Source = "ebpf"   // TC hooks, bpf_ktime_get_ns, via ring buffer
	SourceKernel Source = "kernel" // SO_TIMESTAMPING software stamps
	SourceUser   Source = "user"   // clock reads around syscalls
)

// StampKind says which packet a kernel (eBPF) stamp belongs to.
type StampKind uint8

const (
	StampTx      StampKind = 1 // our ping or trace probe left the host (TC egress)
	StampRxAck   StampKind = 2 // an ack or trace-ack for our flow arrived (TC ingress)
	StampRxICMP  StampKind = 3 // an ICMP error quoting our trace probe arrived (TC ingress)
	StampReflect StampKind = 4 // the in-kernel reflector answered a ping (for counting)
	// Target probes (TargetProber; Type is the IP protocol, Local's port
	// the flow's source port or echo identifier, Seq the probe's sequence,
	// 0 for an answer that does not name it).
	StampTargetTx StampKind = 5 // a target probe left the host (TC egress)
	StampTargetRx StampKind = 6 // an answer to a target probe arrived (TC ingress)
)

// Stamp is one kernel timestamp handed up by internal/loader. The engine joins
// it with the probe it belongs to by (Local port, Remote, Seq) or, for ICMP, by
// (Local port, Remote, TTL).
type Stamp struct {
	Kind               StampKind
	Local              netip.AddrPort // our address and the flow's source port S
	Remote             netip.Addr     // the peer the probe was sent to
	Router             netip.Addr     // StampRxICMP: the router that sent the ICMP error
	ICMPType, ICMPCode uint8
	Type               uint8  // dnms packet type (ping, ack, trace, trace-ack)
	Seq                uint64 // from the dnms header (0 if the ICMP quote was too short)
	Epoch              uint32 // from the dnms header (0 if the ICMP quote was too short)
	TTL                uint8  // trace probes: the TTL from the header or quoted UDP length
	Time               int64  // CLOCK_MONOTONIC nanoseconds
	// Hook is the TC hook's own time (CLOCK_MONOTONIC ns) when Time is the
	// earlier arrival time the stack stamped on an incoming packet, else 0.
	// The matcher falls back to it when the arrival stamp is impossible.
	Hook int64
}
