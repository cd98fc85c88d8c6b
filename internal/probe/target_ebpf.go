package probe

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TargetStamper is the eBPF loader's side of target stamps
// (*loader.Loader): it stamps the probes and answers of the flows it
// watches and hands the stamps to TargetProber.HandleStamp.
type TargetStamper interface {
	WatchTarget(proto uint8, port uint16) error
	UnwatchTarget(proto uint8, port uint16) error
	// Kick makes the loader read its ring buffer now.
	Kick()
}

// ebpfKey names a watched flow: IP protocol, target address, our port or
// echo identifier.
type ebpfKey struct {
	proto  uint8
	remote netip.Addr
	port   uint16
}

// ebpfWait collects the two eBPF stamps of a flow's current probe.
type ebpfWait struct {
	seq    uint64
	tx, rx int64
	done   chan struct{}
}

// ebpfJoin joins TargetStamp events to the probe each flow has in flight.
type ebpfJoin struct {
	st    TargetStamper
	mu    sync.Mutex
	waits map[ebpfKey]*ebpfWait
	// watched counts the open flows per (protocol, port): the programs'
	// map has no address, and flows from two source addresses or to two
	// targets may share a port or echo identifier.
	watched map[[2]uint16]int
}

// protoOf is the IP protocol of kind's probes to an address of v6's family.
func protoOf(kind TargetKind, v6 bool) uint8 {
	switch {
	case kind == KindICMP && v6:
		return unix.IPPROTO_ICMPV6
	case kind == KindICMP:
		return unix.IPPROTO_ICMP
	case kind == KindTCP:
		return unix.IPPROTO_TCP
	}
	return unix.IPPROTO_UDP
}

// watch asks the loader to stamp the flow (kind, port) to dst; false when
// eBPF stamps are off for it (no loader, or the loader refused).
func (p *TargetProber) watch(kind TargetKind, dst netip.Addr, port uint16) bool {
	if p.eb == nil {
		return false
	}
	k := [2]uint16{uint16(protoOf(kind, dst.Is6())), port}
	p.eb.mu.Lock()
	defer p.eb.mu.Unlock()
	if p.eb.watched[k] == 0 {
		if err := p.eb.st.WatchTarget(uint8(k[0]), port); err != nil {
			p.log.Warn("target flow without eBPF stamps", "kind", kind, "addr", dst, "port", port, "err", err)
			return false
		}
	}
	p.eb.watched[k]++
	return true
}

func (p *TargetProber) unwatch(kind TargetKind, dst netip.Addr, port uint16) {
	k := [2]uint16{uint16(protoOf(kind, dst.Is6())), port}
	p.eb.mu.Lock()
	defer p.eb.mu.Unlock()
	if p.eb.watched[k]--; p.eb.watched[k] > 0 {
		return // another open flow uses the same port
	}
	delete(p.eb.watched, k)
	if err := p.eb.st.UnwatchTarget(uint8(k[0]), port); err != nil {
		p.log.Warn("unwatch target flow", "kind", kind, "port", port, "err", err)
	}
}

// arm registers the probe seq of flow k before it is sent.
func (j *ebpfJoin) arm(k ebpfKey, seq uint64) *ebpfWait {
	w := &ebpfWait{seq: seq, done: make(chan struct{})}
	j.mu.Lock()
	j.waits[k] = w
	j.mu.Unlock()
	return w
}

func (j *ebpfJoin) disarm(k ebpfKey, w *ebpfWait) {
	j.mu.Lock()
	if j.waits[k] == w {
		delete(j.waits, k)
	}
	j.mu.Unlock()
}

// HandleStamp takes a target stamp from the eBPF loader (StampTargetTx,
// StampTargetRx; other kinds are ignored). An answer that does not name
// its probe (seq 0: a UDP datagram from the target) counts for the probe
// in flight if it arrived after that probe left.
func (p *TargetProber) HandleStamp(s Stamp) {
	if p.eb == nil || (s.Kind != StampTargetTx && s.Kind != StampTargetRx) {
		return
	}
	k := ebpfKey{proto: s.Type, remote: s.Remote, port: s.Local.Port()}
	j := p.eb
	j.mu.Lock()
	defer j.mu.Unlock()
	w := j.waits[k]
	if w == nil {
		return
	}
	switch {
	case s.Kind == StampTargetTx && s.Seq == w.seq && w.tx == 0:
		w.tx = s.Time
	case s.Kind == StampTargetRx && w.tx != 0 && w.rx == 0 && s.Time >= w.tx &&
		(s.Seq == w.seq || (s.Seq == 0 && k.proto == unix.IPPROTO_UDP)):
		w.rx = s.Time
		close(w.done)
	}
}

// ebpfRTT waits (at most StampWait, kicking the loader's reader) for the
// eBPF stamps of an answered probe and returns its RTT from them.
func (p *TargetProber) ebpfRTT(w *ebpfWait) (time.Duration, bool) {
	select {
	case <-w.done:
	default:
		p.eb.st.Kick()
		t := time.NewTimer(p.cfg.StampWait)
		defer t.Stop()
		select {
		case <-w.done:
		case <-t.C:
			return 0, false
		}
	}
	p.eb.mu.Lock()
	defer p.eb.mu.Unlock()
	return time.Duration(w.rx - w.tx), true
}

// finish sets r's RTT and source from the best stamps there are: eBPF
// (w, when the flow is watched), else kernel, else user.
func (p *TargetProber) finish(r *TargetResult, w *ebpfWait, t1u, t4u, t1k, t4k int64) {
	if w != nil {
		if rtt, ok := p.ebpfRTT(w); ok {
			r.Source, r.RTT = SourceEBPF, rtt
			return
		}
	}
	sample(r, t1u, t4u, t1k, t4k)
}
