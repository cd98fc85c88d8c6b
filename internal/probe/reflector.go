package probe

import (
	"net/netip"
	"sync"
)

// reflFlow is the reflector's state for one flow (peer, source port).
type reflFlow struct {
	epoch   uint32
	rx, ack uint64
}

// maxReflFlows bounds the reflector's flow table: a spoofer cannot grow it
// without bound. When full, an arbitrary flow is forgotten (its counters
// restart, which the prober sees as a reflector restart).
const maxReflFlows = 1 << 16

type reflector struct {
	mu    sync.Mutex
	flows map[FlowKey]*reflFlow
}

// count updates the counters of flow k for a probe of epoch and returns them.
// Pings and trace probes both count, as in the in-kernel reflector.
func (r *reflector) count(k FlowKey, epoch uint32) (rx, ack uint64) {
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
		f = &reflFlow{epoch: epoch}
		r.flows[k] = f
	}
	if f.epoch != epoch {
		*f = reflFlow{epoch: epoch}
	}
	f.rx++
	f.ack++
	return f.rx, f.ack
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
	rx, ack := e.refl.count(FlowKey{Peer: peer, SrcPort: from.Port()}, p.Epoch)
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
