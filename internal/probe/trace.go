package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnms/dnms/internal/graph"
)

// TraceResult is what one Paris traceroute of one flow found.
type TraceResult struct {
	// Hops in TTL order starting at TTL 1; a silent hop has a zero Addr.
	// When Reached, the last hop is the peer itself (from its trace-ack, or
	// an ICMP port unreachable from a host without dnms). When not reached,
	// the trailing run of silent hops that stopped the trace is dropped.
	Hops       []graph.Hop
	Reached    bool
	ProbesSent int
	// KernelStamped counts the hops whose RTT is from eBPF stamps at both
	// ends (the probe at TC egress, the ICMP error or trace-ack on arrival).
	KernelStamped int
}

// traceEvent is one answer to a trace probe.
type traceEvent struct {
	seq    uint64
	router netip.Addr
	dest   bool // trace-ack, or port unreachable from the peer
	unrch  bool // another destination unreachable: the path ends here
	ack    bool // a trace-ack (the peer's reflector counted the probe)
	t      int64
	// ring: the answer came through the eBPF ring buffer, t is its kernel
	// stamp; t1 is then the probe's TC egress stamp if that came too.
	ring bool
	t1   int64
	hook int64 // the TC hook's time when t is the earlier arrival stamp
	// stampOnly: the ring's stamp of a trace-ack. It never answers a hop
	// (only the socket checks the ack's HMAC); it gives the socket's
	// answer its kernel RTT.
	stampOnly bool
}

type traceRun struct {
	seqs   map[uint64]int   // seq → TTL, for probes of this run
	tx     map[uint64]int64 // seq → eBPF TC egress stamp
	events chan traceEvent
}

type traceTable struct {
	mu    sync.Mutex
	flows map[FlowKey]*traceRun
	seq   atomic.Uint64
}

func (t *traceTable) reply(k FlowKey, seq uint64, from netip.Addr, ack bool, now int64) RejectReason {
	return t.deliver(k, traceEvent{seq: seq, router: from, dest: true, ack: ack, t: now})
}

func (t *traceTable) replyICMP(k FlowKey, seq uint64, router netip.Addr, reached, unreachable bool, now int64) RejectReason {
	return t.deliver(k, traceEvent{seq: seq, router: router, dest: reached, unrch: unreachable && !reached, t: now})
}

// replyStamp delivers an ICMP error the eBPF program saw, stamped in the
// kernel on arrival, joined with the probe's egress stamp if it came.
func (t *traceTable) replyStamp(k FlowKey, seq uint64, router netip.Addr, reached, unreachable bool, at, hook int64) RejectReason {
	return t.deliver(k, traceEvent{seq: seq, router: router, dest: reached, unrch: unreachable && !reached, t: at, hook: hook, ring: true})
}

// stampAck delivers the eBPF arrival stamp of a trace-ack.
func (t *traceTable) stampAck(k FlowKey, seq uint64, at, hook int64) RejectReason {
	return t.deliver(k, traceEvent{seq: seq, t: at, hook: hook, ring: true, stampOnly: true})
}

// stampTx records the eBPF egress stamp of trace probe seq of flow k.
func (t *traceTable) stampTx(k FlowKey, seq uint64, at int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.flows[k]
	if r == nil {
		return false
	}
	if _, ok := r.seqs[seq]; !ok {
		return false
	}
	r.tx[seq] = at
	return true
}

func (t *traceTable) deliver(k FlowKey, ev traceEvent) RejectReason {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.flows[k]
	if r == nil {
		return RejectUnknownFlow
	}
	if _, ok := r.seqs[ev.seq]; !ok {
		return RejectUnknownFlow
	}
	if ev.ring {
		if ev.t1 = r.tx[ev.seq]; ev.t1 != 0 {
			ev.t, _ = possibleArrival(ev.t1, 0, ev.t, ev.hook)
		}
	}
	select {
	case r.events <- ev:
	default: // more answers than probes: duplicates
		return RejectReplay
	}
	return RejectNone
}

// ErrTraceBusy is returned when a trace of the same flow is already running.
var ErrTraceBusy = errors.New("probe: a trace of this flow is already running")

// hop states
const (
	hopUnsent uint8 = iota
	hopInFlight
	hopAnswered
	hopSilent
)

// probeHop is one TTL's probe of a flowRun.
type probeHop struct {
	state    uint8
	seq      uint64
	sent     int64
	deadline int64
	addr     netip.Addr
	rtt      time.Duration
	acked    bool       // trace-ack: the peer's reflector counted it
	dest     bool       // the peer answered
	unrch    bool       // a router said destination unreachable
	ring     bool       // the eBPF ring buffer brought the answer's stamp
	kernel   bool       // rtt is from eBPF stamps at both ends
	ackStamp traceEvent // the ring's stamp of a trace-ack the socket has not brought yet
}

// flowRun is one run of trace probes on one flow: the flow registered in the
// trace table, the probes sent by TTL and what answered them. Trace and
// ProbeTTLs are two schedules over it.
type flowRun struct {
	e        *Engine
	s        *sock
	k        FlowKey
	run      *traceRun
	dst      netip.AddrPort
	v6       bool
	hops     []probeHop // index = TTL
	bySeq    map[uint64]int
	inflight int
	sent     int
	destTTL  int // lowest TTL the peer answered, 0 if none
	stopTTL  int // lowest TTL a router said destination unreachable, 0 if none
	timer    *time.Timer
}

// openFlow registers flow (peer, srcPort) for probes up to maxTTL. Close it.
func (e *Engine) openFlow(peer netip.Addr, srcPort uint16, maxTTL int) (*flowRun, error) {
	s := e.srcSock(srcPort)
	if s == nil {
		return nil, fmt.Errorf("probe: source port %d outside %d-%d", srcPort, e.cfg.SrcPortStart, e.cfg.SrcPortEnd)
	}
	k := FlowKey{Peer: peer, SrcPort: srcPort}
	// Up to two answers per probe: the socket's error queue and the ring.
	run := &traceRun{seqs: make(map[uint64]int, maxTTL), tx: make(map[uint64]int64, maxTTL), events: make(chan traceEvent, 4*maxTTL)}
	e.trace.mu.Lock()
	if e.trace.flows[k] != nil {
		e.trace.mu.Unlock()
		return nil, ErrTraceBusy
	}
	e.trace.flows[k] = run
	e.trace.mu.Unlock()
	return &flowRun{
		e: e, s: s, k: k, run: run,
		dst:   netip.AddrPortFrom(peer, e.cfg.PingPort),
		v6:    peer.Is6(),
		hops:  make([]probeHop, maxTTL+1),
		bySeq: make(map[uint64]int, maxTTL),
		timer: time.NewTimer(time.Hour),
	}, nil
}

// send sends the probe for ttl. A send error still counts the probe: it may
// have left.
func (f *flowRun) send(ttl int) error {
	e, s := f.e, f.s
	seq := e.trace.seq.Add(1)
	e.trace.mu.Lock()
	f.run.seqs[seq] = ttl
	e.trace.mu.Unlock()
	f.bySeq[seq] = ttl
	s.wmu.Lock()
	now := nanotime()
	p := Packet{Type: TypeTrace, TTL: uint8(ttl), SrcPort: f.k.SrcPort, PadLen: uint16(ttl), Epoch: e.epoch, Seq: seq, T1: now}
	s.wbuf = s.enc.AppendEncode(s.wbuf[:0], &p)
	oob := ttlCmsg(s.woob[:], f.v6, ttl)
	var serr error
	err := s.fd(func(fd uintptr) { serr = s.wmsg.send(fd, s.wbuf, oob, f.dst) })
	s.wmu.Unlock()
	if err == nil {
		err = serr
	}
	f.hops[ttl] = probeHop{state: hopInFlight, seq: seq, sent: now, deadline: now + int64(e.cfg.TraceTimeout)}
	f.inflight++
	f.sent++
	e.met.traceProbes.Inc()
	if err != nil {
		return fmt.Errorf("probe: trace %s from port %d ttl %d: %w", f.k.Peer, f.k.SrcPort, ttl, err)
	}
	return nil
}

// wait waits for one answer or the earliest probe deadline, then marks the
// probes past their deadline silent. It returns false with nothing in
// flight.
func (f *flowRun) wait(ctx context.Context) (bool, error) {
	var earliest int64
	for ttl := range f.hops {
		if h := f.hops[ttl]; h.state == hopInFlight && (earliest == 0 || h.deadline < earliest) {
			earliest = h.deadline
		}
	}
	if earliest == 0 {
		return false, nil
	}
	f.timer.Reset(time.Duration(max(earliest-nanotime(), 0)))
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-f.e.closed:
		return false, ErrClosed
	case ev := <-f.run.events:
		f.take(ev)
	case <-f.timer.C:
	}
	now := nanotime()
	for ttl := range f.hops {
		if h := &f.hops[ttl]; h.state == hopInFlight && now >= h.deadline {
			h.state = hopSilent
			f.inflight--
		}
	}
	return true, nil
}

// take records one answer. The first answer to a probe settles its hop; the
// ring buffer's copy of an answer the socket brought first only replaces
// the RTT with the kernel's. A trace-ack's ring stamp waits for the socket.
func (f *flowRun) take(ev traceEvent) {
	ttl, ok := f.bySeq[ev.seq]
	if !ok {
		return
	}
	h := &f.hops[ttl]
	switch {
	case ev.stampOnly && h.state == hopInFlight:
		h.ackStamp = ev
		return
	case ev.stampOnly && !(h.state == hopAnswered && h.acked):
		return
	case h.state == hopInFlight:
	case h.state == hopAnswered && ev.ring && !h.ring && (ev.stampOnly || ev.router == h.addr):
		h.ring = true
		if ev.t1 != 0 {
			h.rtt, h.kernel = time.Duration(ev.t-ev.t1), true
		}
		return
	default:
		return // duplicate answer, or one after the hop timed out
	}
	if ev.ack && h.ackStamp.ring {
		ev.t, ev.t1, ev.ring = h.ackStamp.t, h.ackStamp.t1, true
	}
	t1 := h.sent
	if ev.t1 != 0 {
		t1, h.kernel = ev.t1, true
	}
	h.state, h.addr, h.rtt, h.acked, h.ring = hopAnswered, ev.router, time.Duration(ev.t-t1), ev.ack, ev.ring
	h.dest, h.unrch = ev.dest, ev.unrch
	f.inflight--
	if ev.dest && (f.destTTL == 0 || ttl < f.destTTL) {
		f.destTTL = ttl
	}
	if ev.unrch && (f.stopTTL == 0 || ttl < f.stopTTL) {
		f.stopTTL = ttl
	}
}

// awaitStamps gives the eBPF stamps of answers the socket brought first up
// to StampWait to come through the ring buffer (the engine kicks the loader
// after each read, so they are usually there already).
func (f *flowRun) awaitStamps(ctx context.Context) {
	if f.e.source != SourceEBPF {
		return
	}
	deadline := nanotime() + int64(f.e.cfg.StampWait)
	for f.missingStamps() {
		left := deadline - nanotime()
		if left <= 0 {
			return
		}
		f.timer.Reset(time.Duration(left))
		select {
		case <-ctx.Done():
			return
		case <-f.e.closed:
			return
		case ev := <-f.run.events:
			f.take(ev)
		case <-f.timer.C:
			return
		}
	}
}

// missingStamps reports whether an answer still lacks its ring buffer copy.
func (f *flowRun) missingStamps() bool {
	for _, h := range f.hops {
		if h.state == hopAnswered && !h.ring {
			return true
		}
	}
	return false
}

// close tells the matcher how many probes of this flow the peer's reflector
// counted (trace-acks) and how many may or may not have reached it, and
// unregisters the flow.
func (f *flowRun) close() {
	f.timer.Stop()
	// Below the destination a probe expires before the peer: below the
	// highest TTL a router answered (Paris: one path for every TTL) or the
	// TTL the peer answered at. At or beyond those (or when nothing
	// answered above it) a silent probe may have been counted by the peer
	// with its trace-ack lost.
	router := 0
	for ttl, h := range f.hops {
		if h.state == hopAnswered && !h.dest {
			router = ttl
		}
	}
	var acked, unknown uint64
	for _, h := range f.hops {
		if h.state == hopAnswered {
			src := SourceUser
			if h.kernel {
				src = SourceEBPF
			}
			f.e.met.traceAnswers.WithLabelValues(string(src)).Inc()
		}
	}
	for ttl, h := range f.hops {
		switch {
		case h.acked:
			acked++
		case h.state == hopSilent || h.state == hopInFlight:
			if ttl > router && (f.destTTL == 0 || ttl >= f.destTTL) {
				unknown++
			}
		}
	}
	f.e.m.traceDone(f.k, acked, unknown, nanotime())
	f.e.trace.mu.Lock()
	delete(f.e.trace.flows, f.k)
	f.e.trace.mu.Unlock()
}

// Trace runs one Paris traceroute on flow (peer, srcPort): every probe leaves
// the socket bound to srcPort towards peer:PingPort, so the 5-tuple is
// constant and ECMP keeps every TTL on one path. Up to TraceWindow TTLs are
// in flight at once; each probe carries padLen = TTL and its own sequence
// number, and answers are matched by sequence number (quoted in ICMP errors
// and echoed in trace-acks), never by order. The trace stops at the
// destination (its trace-ack) or after maxSilent silent hops in a row.
// maxTTL ≤ 0 means 32; maxSilent ≤ 0 means 4.
func (e *Engine) Trace(ctx context.Context, peer netip.Addr, srcPort uint16, maxTTL, maxSilent int) (res TraceResult, err error) {
	if maxTTL <= 0 {
		maxTTL = 32
	}
	maxTTL = min(maxTTL, MaxPadLen)
	if maxSilent <= 0 {
		maxSilent = 4
	}
	f, err := e.openFlow(peer, srcPort, maxTTL)
	if err != nil {
		return res, err
	}
	defer f.close()
	defer func() { res.ProbesSent = f.sent }()

	hops := f.hops
	next := 1
	var lastTTL int // where the result ends
	for {
		for f.inflight < e.cfg.TraceWindow && next <= maxTTL && (f.destTTL == 0 || next < f.destTTL) && (f.stopTTL == 0 || next < f.stopTTL) {
			if err := f.send(next); err != nil {
				return res, err
			}
			next++
		}
		// Decide from the prefix of settled hops.
		done, silent := false, 0
		for ttl := 1; ttl <= maxTTL; ttl++ {
			h := hops[ttl]
			if h.state == hopUnsent || h.state == hopInFlight {
				if next > maxTTL && f.inflight == 0 {
					done = true
				}
				break
			}
			if ttl == f.destTTL {
				// Reached; wait for probes beyond it still in flight so
				// that the flow's reflector accounting stays exact.
				lastTTL = ttl
				res.Reached = true
				done = f.inflight == 0 || ttl == maxTTL
				break
			}
			if ttl == f.stopTTL {
				lastTTL = ttl // unreachable: the path ends at this router
				done = true
				break
			}
			if h.state == hopSilent {
				silent++
				if silent >= maxSilent {
					lastTTL = ttl - silent
					done = true
					break
				}
			} else {
				silent = 0
				lastTTL = ttl
			}
			if ttl == maxTTL {
				done = true
			}
		}
		if done {
			break
		}
		more, err := f.wait(ctx)
		if err != nil {
			return res, err
		}
		if !more {
			break
		}
	}

	f.awaitStamps(ctx)
	if lastTTL > maxTTL {
		lastTTL = maxTTL
	}
	res.Hops = make([]graph.Hop, 0, lastTTL)
	for ttl := 1; ttl <= lastTTL; ttl++ {
		h := hops[ttl]
		if h.state != hopAnswered {
			res.Hops = append(res.Hops, graph.Hop{})
			continue
		}
		if ttl == f.destTTL {
			h.addr = peer
		}
		if h.kernel {
			res.KernelStamped++
		}
		res.Hops = append(res.Hops, graph.Hop{Addr: h.addr, RTT: h.rtt})
	}
	return res, nil
}

// TTLAnswer is what one trace probe of ProbeTTLs found.
type TTLAnswer struct {
	TTL int
	// Hop is who answered and after how long; a zero Addr is a probe that
	// nobody answered within TraceTimeout (a silent hop).
	Hop graph.Hop
	// Dest: the peer answered (its trace-ack, or an ICMP port unreachable
	// from a host without dnms); Hop.Addr is the peer.
	Dest bool
	// Unreachable: a router answered destination unreachable; the path
	// ends at it.
	Unreachable bool
	// Kernel: Hop.RTT is from eBPF stamps at both ends.
	Kernel bool
}

// ProbeResult is what ProbeTTLs found.
type ProbeResult struct {
	// Answers has one entry per probe sent, in TTL order.
	Answers    []TTLAnswer
	ProbesSent int
}

// ProbeTTLs sends one Paris traceroute probe on flow (peer, srcPort) for
// each TTL in ttls (the same probes as Trace), and waits until each is
// answered or TraceTimeout passes. It is for a caller that already knows
// part of the path and wants only some hops: it sends exactly the TTLs
// asked for, ascending, up to TraceWindow in flight, except that a TTL above
// one the peer (or a destination unreachable) already answered is not
// sent. TTLs outside 1..MaxPadLen are ignored.
func (e *Engine) ProbeTTLs(ctx context.Context, peer netip.Addr, srcPort uint16, ttls []int) (res ProbeResult, err error) {
	want := make([]int, 0, len(ttls))
	for _, t := range ttls {
		if t >= 1 && t <= MaxPadLen {
			want = append(want, t)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if len(want) == 0 {
		return res, nil
	}
	f, err := e.openFlow(peer, srcPort, want[len(want)-1])
	if err != nil {
		return res, err
	}
	defer f.close()
	defer func() { res.ProbesSent = f.sent }()
	next := 0 // index into want
	for {
		for f.inflight < e.cfg.TraceWindow && next < len(want) {
			ttl := want[next]
			if (f.destTTL != 0 && ttl > f.destTTL) || (f.stopTTL != 0 && ttl > f.stopTTL) {
				next = len(want) // the path ends below: the rest would overshoot
				break
			}
			if err := f.send(ttl); err != nil {
				return res, err
			}
			next++
		}
		more, err := f.wait(ctx)
		if err != nil {
			return res, err
		}
		if !more && next >= len(want) {
			break
		}
	}
	f.awaitStamps(ctx)
	for ttl, h := range f.hops {
		if h.state == hopUnsent {
			continue
		}
		a := TTLAnswer{TTL: ttl}
		if h.state == hopAnswered {
			a.Hop = graph.Hop{Addr: h.addr, RTT: h.rtt}
			a.Dest, a.Unreachable, a.Kernel = h.dest, h.unrch, h.kernel
			if h.dest {
				a.Hop.Addr = peer
			}
		}
		res.Answers = append(res.Answers, a)
	}
	return res, nil
}
