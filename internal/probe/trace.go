package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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
}

// traceEvent is one answer to a trace probe.
type traceEvent struct {
	seq    uint64
	router netip.Addr
	dest   bool // trace-ack, or port unreachable from the peer
	unrch  bool // another destination unreachable: the path ends here
	ack    bool // a trace-ack (the peer's reflector counted the probe)
	t      int64
}

type traceRun struct {
	seqs   map[uint64]int // seq → TTL, for probes of this run
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

// Trace runs one Paris traceroute on flow (peer, srcPort): every probe leaves
// the socket bound to srcPort towards peer:PingPort, so the 5-tuple is
// constant and ECMP keeps every TTL on one path. Up to TraceWindow TTLs are
// in flight at once; each probe carries padLen = TTL and its own sequence
// number, and answers are matched by sequence number (quoted in ICMP errors
// and echoed in trace-acks), never by order. The trace stops at the
// destination (its trace-ack) or after maxSilent silent hops in a row.
// maxTTL ≤ 0 means 32; maxSilent ≤ 0 means 4.
func (e *Engine) Trace(ctx context.Context, peer netip.Addr, srcPort uint16, maxTTL, maxSilent int) (TraceResult, error) {
	var res TraceResult
	s := e.srcSock(srcPort)
	if s == nil {
		return res, fmt.Errorf("probe: source port %d outside %d-%d", srcPort, e.cfg.SrcPortStart, e.cfg.SrcPortEnd)
	}
	if maxTTL <= 0 {
		maxTTL = 32
	}
	maxTTL = min(maxTTL, MaxPadLen)
	if maxSilent <= 0 {
		maxSilent = 4
	}
	k := FlowKey{Peer: peer, SrcPort: srcPort}
	run := &traceRun{seqs: make(map[uint64]int, maxTTL), events: make(chan traceEvent, 4*maxTTL)}
	e.trace.mu.Lock()
	if e.trace.flows[k] != nil {
		e.trace.mu.Unlock()
		return res, ErrTraceBusy
	}
	e.trace.flows[k] = run
	e.trace.mu.Unlock()
	defer func() {
		e.trace.mu.Lock()
		delete(e.trace.flows, k)
		e.trace.mu.Unlock()
	}()

	type hop struct {
		state    uint8
		seq      uint64
		sent     int64
		deadline int64
		addr     netip.Addr
		rtt      time.Duration
		acked    bool // trace-ack: the peer's reflector counted it
	}
	hops := make([]hop, maxTTL+1) // index = TTL
	bySeq := make(map[uint64]int, maxTTL)
	destTTL := 0
	stopTTL := 0 // a router said destination unreachable at this TTL
	next, inflight := 1, 0
	timeout := int64(e.cfg.TraceTimeout)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	v6 := peer.Is6()
	dst := netip.AddrPortFrom(peer, e.cfg.PingPort)

	send := func(ttl int) error {
		seq := e.trace.seq.Add(1)
		e.trace.mu.Lock()
		run.seqs[seq] = ttl
		e.trace.mu.Unlock()
		bySeq[seq] = ttl
		s.wmu.Lock()
		now := nanotime()
		p := Packet{Type: TypeTrace, TTL: uint8(ttl), SrcPort: srcPort, PadLen: uint16(ttl), Epoch: e.epoch, Seq: seq, T1: now}
		s.wbuf = s.enc.AppendEncode(s.wbuf[:0], &p)
		oob := ttlCmsg(s.woob[:], v6, ttl)
		var serr error
		err := s.fd(func(fd uintptr) { serr = s.wmsg.send(fd, s.wbuf, oob, dst) })
		s.wmu.Unlock()
		if err == nil {
			err = serr
		}
		hops[ttl] = hop{state: hopInFlight, seq: seq, sent: now, deadline: now + timeout}
		res.ProbesSent++
		e.met.traceProbes.Inc()
		if err != nil {
			return fmt.Errorf("probe: trace %s from port %d ttl %d: %w", peer, srcPort, ttl, err)
		}
		return nil
	}

	var lastTTL int // where the result ends
	for {
		for inflight < e.cfg.TraceWindow && next <= maxTTL && (destTTL == 0 || next < destTTL) && (stopTTL == 0 || next < stopTTL) {
			if err := send(next); err != nil {
				return res, err
			}
			next++
			inflight++
		}
		// Decide from the prefix of settled hops.
		done, silent := false, 0
		for ttl := 1; ttl <= maxTTL; ttl++ {
			h := hops[ttl]
			if h.state == hopUnsent || h.state == hopInFlight {
				if next > maxTTL && inflight == 0 {
					done = true
				}
				break
			}
			if ttl == destTTL {
				// Reached; wait for probes beyond it still in flight so
				// that the flow's reflector accounting stays exact.
				lastTTL = ttl
				res.Reached = true
				done = inflight == 0 || ttl == maxTTL
				break
			}
			if ttl == stopTTL {
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
		// Wait for an answer or the earliest deadline.
		var earliest int64
		for ttl := 1; ttl < next; ttl++ {
			if h := hops[ttl]; h.state == hopInFlight && (earliest == 0 || h.deadline < earliest) {
				earliest = h.deadline
			}
		}
		if earliest == 0 {
			break
		}
		timer.Reset(time.Duration(max(earliest-nanotime(), 0)))
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-e.closed:
			return res, ErrClosed
		case ev := <-run.events:
			ttl, ok := bySeq[ev.seq]
			if !ok || hops[ttl].state != hopInFlight {
				break // duplicate answer
			}
			h := &hops[ttl]
			h.state, h.addr, h.rtt, h.acked = hopAnswered, ev.router, time.Duration(ev.t-h.sent), ev.ack
			inflight--
			if ev.dest && (destTTL == 0 || ttl < destTTL) {
				destTTL = ttl
			}
			if ev.unrch && (stopTTL == 0 || ttl < stopTTL) {
				stopTTL = ttl
			}
		case <-timer.C:
		}
		now := nanotime()
		for ttl := 1; ttl < next; ttl++ {
			if h := &hops[ttl]; h.state == hopInFlight && now >= h.deadline {
				h.state = hopSilent
				inflight--
			}
		}
	}

	// Tell the matcher how many probes of this flow the peer's reflector
	// counted (trace-acks) and how many may or may not have reached it.
	var acked, unknown uint64
	for ttl := 1; ttl < next; ttl++ {
		switch h := hops[ttl]; {
		case h.acked:
			acked++
		case h.state == hopSilent || h.state == hopInFlight:
			// Below the destination a probe expires before the peer; at or
			// beyond it (or when the peer never answered) a silent probe
			// may have been counted by the peer with its trace-ack lost.
			if destTTL == 0 || ttl >= destTTL {
				unknown++
			}
		}
	}
	e.m.traceDone(k, acked, unknown, nanotime())

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
		if ttl == destTTL {
			h.addr = peer
		}
		res.Hops = append(res.Hops, graph.Hop{Addr: h.addr, RTT: h.rtt})
	}
	return res, nil
}
