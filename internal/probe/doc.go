// Package probe owns the dnms wire format, the probe sockets, one ping and one
// trace probe, matching replies to probes, the userspace reflector, and
// timestamps from the best available source (ebpf, kernel, user).
//
// It schedules nothing: internal/pinger and internal/mapper decide what to send
// when.
//
// # Wire format (version 1)
//
// Every dnms packet is a UDP datagram whose destination port is the ping port
// (-pingPort, default 33435): pings A:S→B:P, mirrored acks B:S→A:P, trace
// probes A:S→B:P. All fields are big-endian.
//
//	off size field
//	  0    4 magic      0x444E4D53 ("DNMS")
//	  4    1 version    1
//	  5    1 type       1 ping, 2 ack, 3 trace, 4 trace-ack
//	  6    1 flags      bit0 HMAC present, bit1 reflected in kernel (eBPF)
//	  7    1 ttl        trace probes: the IP TTL the probe was sent with; else 0
//	  8    2 srcPort    the flow's source port S (as sent by the prober)
//	 10    2 padLen     number of zero padding bytes after the header (traces)
//	 12    4 epoch      random per prober process start; reflector resets a
//	                    flow's counters when it changes
//	 16    8 seq        sequence number, per flow, starting at 1
//	 24    8 t1         prober tx time, CLOCK_MONOTONIC ns (prober's clock)
//	 32    8 t2         reflector rx time, CLOCK_MONOTONIC ns (reflector's clock)
//	 40    8 t3         reflector tx time, CLOCK_MONOTONIC ns (reflector's clock)
//	 48    8 rxCount    reflector: probes received on this flow this epoch
//	 56    8 ackCount   reflector: acks sent on this flow this epoch (incl. this one)
//	 64   16 hmac       present iff flags bit0: HMAC-SHA256 truncated to 16 bytes
//	                    over bytes 0..31 with type (5) and flags (6) zeroed
//	 64/80 padLen zero bytes
//
// The HMAC covers only the prober's own fields so that the in-kernel reflector,
// which cannot compute SHA-256, can turn a ping into an ack by rewriting type,
// flags, t2, t3 and the counters and copying the HMAC. The userspace reflector
// produces the same bytes. A reflector does not need the key to reflect.
//
// A trace probe with TTL n carries padLen = n so that an ICMP time-exceeded,
// which quotes the IP and UDP headers, identifies the TTL from the quoted UDP
// length alone; ECMP does not hash the length, so the 5-tuple stays constant
// (Paris traceroute).
//
// # Reflector counters
//
// rxCount and ackCount count every ping and trace probe the reflector
// received on the flow (peer address, UDP source port S) in the prober's
// epoch, including the one being answered — the in-kernel reflector and the
// userspace reflector count the same way. The prober derives loss direction
// per interval between two in-time acks a < b of a flow:
//
//	forward lost = (b − a) − (rxCount_b − rxCount_a) [+ trace-acked probes]
//	reverse lost = the other pings of the interval that timed out
//
// A ping is reported lost when it times out. When no ack has closed its
// interval yet (on a dead reverse path, none will), it is reported
// LossUnknown at once, and the ack that later closes the interval, within
// Config.LossResolveWindow, gives its direction in a second Result with
// Sample.Resolves set: losses are never held back waiting for a direction.
//
// A reflector counts a probe once: per flow it remembers the last 64
// sequence numbers (pings and trace probes apart), so a replayed probe is
// RejectReplay and counts nothing. It restarts a flow's counters at a new
// epoch only when the probe's T1 is later than any seen on the flow (a
// restarted prober) or the flow was silent for 10 s (a rebooted one), so a
// replayed old ping cannot reset them. With a key, the in-kernel reflector
// answers only pings with the HMAC flag, from cluster members, at epochs
// the userspace reflector confirmed (Config.ConfirmEpoch); it leaves
// everything else to userspace.
//
// Trace probes on the flow are accounted for: one whose trace-ack came back
// was counted; a silent one at or beyond the destination may or may not have
// been, and makes that interval's split LossUnknown. Counters that go
// backwards (reflector restart) also give LossUnknown.
//
// # Acks that are not accepted
//
// An ack for a flow or epoch this engine never probed, or for a sequence
// number it never sent, is RejectUnknownFlow; a second ack of one ping is
// RejectReplay (both counted in dnms_packets_rejected_total). The first ack
// of a ping that already timed out is counted as late
// (dnms_acks_late_total) and leaves the ping lost. With a probe key, a packet
// without HMAC or with a wrong one is RejectHMAC and is neither matched nor
// reflected.
//
// # Time
//
// Every stamp is CLOCK_MONOTONIC ns. user stamps are runtime.nanotime reads
// right before sendmsg (T1, which is also what the ping carries) and right
// after recvmsg returns (T4). kernel stamps are SO_TIMESTAMPING software
// stamps (tx from the error queue, matched by the looped-back packet's flow
// and seq; rx from the ack's control message), converted from
// CLOCK_REALTIME with an offset re-sampled every 100 ms. ebpf stamps come
// through HandleStamp. A sample uses T1 and T4 from one source: the chosen
// one if both arrived within StampWait of the ack, else the next source
// down; Result.Source says which. The userspace reflector puts its rx stamp
// (kernel when available, else user) in T2 and a clock read right before
// sendmsg in T3; the in-kernel reflector stamps both in TC ingress and sets
// flags bit1. An ebpf T4 is the stack's arrival stamp; one that would put
// the ack before T1 + (T3 − T2) is replaced by the TC hook's time
// (dnms_timestamp_arrival_rejected_total).
//
// Trace hops: a router's ICMP error reaches the trace through the socket's
// error queue and, with ebpf, through HandleStamp; whichever comes first
// answers the hop (matched by seq and epoch). The hop RTT is user time
// unless ebpf stamped both the probe's egress and the answer's arrival;
// then it is kernel time at both ends. A trace-ack's ebpf stamp only refines
// the RTT of the answer the socket authenticated.
package probe
