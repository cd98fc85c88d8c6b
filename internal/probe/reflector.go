package probe

import (
	"net/netip"
	"sync"
	"time"
)

// reflFlow is the reflector's state for one flow (peer, source port).
type reflFlow struct {
	epoch   uint32
	rx, ack uint64
	// lastT1 is the newest prober clock (T1) seen on the flow, lastSeen
	// our clock then: an epoch change is taken only from a prober whose
	// clock moved on (a restart on the same boot) or after the flow was
	// quiet for epochQuiet (a reboot), never from a replayed old ping.
	lastT1, lastSeen int64
	// Sequence numbers seen recently, pings and trace probes apart (they
	// have sequence spaces of their own): a replayed probe counts nothing.
	pings, traces seqWindow
}

// epochQuiet is how long a flow must be silent before a probe with another
// epoch and an older clock may restart its counters (a rebooted prober).
const epochQuiet = 10 * time.Second

// seqWindow remembers the highest sequence number and the 64 below it.
type seqWindow struct {
	top  uint64
	bits uint64 // bit i: top-i was seen
}

// fresh records seq and reports whether it was new. A seq more than 63
// below the highest is taken as a replay.
func (w *seqWindow) fresh(seq uint64) bool {
	switch {
	case w.top == 0 || seq > w.top:
		if d := seq - w.top; w.top == 0 || d >= 64 {
			w.bits = 1
		} else {
			w.bits = w.bits<<d | 1
		}
		w.top = seq
		return true
	case w.top-seq >= 64:
		return false
	}
	bit := uint64(1) << (w.top - seq)
	if w.bits&bit != 0 {
		return false
	}
	w.bits |= bit
	return true
}

// maxReflFlows bounds the reflector's flow table: a spoofer cannot grow it
// without bound. When full, an arbitrary flow is forgotten (its counters
// restart, which the prober sees as a reflector restart).
const maxReflFlows = 1 << 16

type reflector struct {
	mu    sync.Mutex
	flows map[FlowKey]*reflFlow
}

// count updates the counters of flow k for probe p (received at now, our
// monotonic ns) and returns them. Pings and trace probes both count, as in
// the in-kernel reflector. A replayed probe (a sequence number seen, or an
// old epoch with an older clock) is RejectReplay and changes nothing.
func (r *reflector) count(k FlowKey, p *Packet, now int64) (rx, ack uint64, rej RejectReason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.flows[k]
	if f == nil {
		if len(r.flows) >= maxReflFlows {
			for old := range r.flows {
				delete(r.flows, old)
				break
			}
		}
		f = &reflFlow{epoch: p.Epoch, lastT1: p.T1}
		r.flows[k] = f
	}
	if f.epoch != p.Epoch {
		if p.T1 <= f.lastT1 && now-f.lastSeen < int64(epochQuiet) {
			return 0, 0, RejectReplay
		}
		*f = reflFlow{epoch: p.Epoch, lastT1: p.T1}
	}
	w := &f.pings
	if p.Type == TypeTrace {
		w = &f.traces
	}
	if !w.fresh(p.Seq) {
		return 0, 0, RejectReplay
	}
	f.lastT1, f.lastSeen = max(f.lastT1, p.T1), now
	f.rx++
	f.ack++
	return f.rx, f.ack, RejectNone
}

// Reflect turns ping (or trace probe) p into its ack in place: the fields the
// in-kernel reflector rewrites (type, t2, t3, rxCount, ackCount) change and
// everything else — flags, HMAC, padding length — is kept, so the bytes are
// the same as the kernel's except flags bit1 (FlagKernel) and the times.
func Reflect(p *Packet, t2, t3 int64, rx, ack uint64) {
	if p.Type == TypeTrace {
		p.Type = TypeTraceAck
	} else {
		p.Type = TypeAck
	}
	p.T2, p.T3, p.RxCount, p.AckCount = t2, t3, rx, ack
}

// reflect answers ping p from `from` (A:S): the ack leaves our socket bound
// to S towards A's ping port.
func (e *Engine) reflect(from netip.AddrPort, p *Packet, t2 int64) {
	s := e.srcSock(from.Port())
	if s == nil {
		e.met.reflNoSocket.Inc()
		return
	}
	peer := from.Addr().Unmap()
	rx, ack, rej := e.refl.count(FlowKey{Peer: peer, SrcPort: from.Port()}, p, t2)
	if rej != RejectNone {
		e.met.reject(rej)
		return
	}
	if e.cfg.ConfirmEpoch != nil && len(e.cfg.Key) > 0 {
		e.cfg.ConfirmEpoch(peer, from.Port(), p.Epoch, rx, ack) // p passed the HMAC check
	}
	dst := netip.AddrPortFrom(peer, e.cfg.PingPort)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	Reflect(p, t2, 0, rx, ack)
	s.wbuf = AppendEncode(s.wbuf[:0], p)
	var serr error
	err := s.fd(func(fd uintptr) {
		// t3 last, right before the send; it is outside the HMAC.
		putT3(s.wbuf, nanotime())
		serr = s.wmsg.send(fd, s.wbuf, nil, dst)
	})
	if err != nil || serr != nil {
		e.met.sendErrors.Inc()
		return
	}
	e.met.reflected.Inc()
}

func putT3(b []byte, t int64) {
	v := uint64(t)
	for i := range 8 {
		b[47-i] = byte(v >> (8 * i))
	}
}
