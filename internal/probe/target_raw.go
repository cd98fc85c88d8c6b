package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rawKey names a raw flow: the remote address and, for icmp, the echo
// identifier (a); for tcp, the remote port (a) and our port (b).
type rawKey struct {
	remote netip.Addr
	a, b   uint16
}

// rawEvent is what the shared reader saw for one raw flow: the kernel
// transmit stamp of a probe (tx) or an answer.
type rawEvent struct {
	tx    bool
	seq   uint32 // icmp: echo sequence; tcp: our initial sequence number
	reply string
	lost  bool // an answer that says the target is unreachable
	tUser int64
	tKern int64
}

// rawSent is the probe behind one OPT_ID.
type rawSent struct {
	k   rawKey
	seq uint32
}

const txIDWindow = 1 << 14

// rawParser maps one packet (an answer from `from`, or the looped-back copy
// of a probe when tx) to its flow and event. IPv4 raw sockets deliver the
// IP header, IPv6 ones do not.
type rawParser func(pkt []byte, from netip.Addr, tx bool) (rawKey, rawEvent, bool)

// rawSock is one raw IPv4 socket (icmp or tcp) shared by every flow of its
// kind; one reader goroutine dispatches answers and transmit stamps by flow.
type rawSock struct {
	p     *TargetProber
	conn  *net.IPConn
	rc    syscall.RawConn
	parse rawParser

	wmu  sync.Mutex
	wm   *msg
	woob [64]byte
	sent uint32 // sends that asked for a transmit stamp: the kernel's OPT_ID counter

	mu    sync.Mutex
	flows map[rawKey]chan rawEvent
	// byID maps a transmit stamp's OPT_ID to its probe (bounded: ids more
	// than txIDWindow behind the newest are forgotten).
	byID map[uint32]rawSent
	done chan struct{}
}

// rawSocket returns the shared raw socket of kind and family, opening it
// on first use.
func (p *TargetProber) rawSocket(kind TargetKind, v6 bool) (*rawSock, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	var (
		slot    **rawSock
		network string
		parse   rawParser
	)
	switch {
	case kind == KindICMP && !v6:
		slot, network = &p.icmp, "ip4:icmp"
		parse = func(b []byte, _ netip.Addr, tx bool) (rawKey, rawEvent, bool) { return parseICMPTarget(b, tx) }
	case kind == KindTCP && !v6:
		slot, network = &p.tcp, "ip4:tcp"
		parse = func(b []byte, _ netip.Addr, tx bool) (rawKey, rawEvent, bool) { return parseTCPTarget(b, tx) }
	case kind == KindICMP:
		slot, network = &p.icmp6, "ip6:ipv6-icmp"
		parse = func(b []byte, from netip.Addr, tx bool) (rawKey, rawEvent, bool) {
			if tx {
				return rawKey{}, rawEvent{}, false
			}
			return parseICMP6Target(b, from)
		}
	default:
		slot, network = &p.tcp6, "ip6:tcp"
		parse = func(b []byte, from netip.Addr, tx bool) (rawKey, rawEvent, bool) {
			if tx {
				return rawKey{}, rawEvent{}, false
			}
			return parseTCP6Target(b, from)
		}
	}
	if *slot != nil {
		return *slot, nil
	}
	var laddr *net.IPAddr
	if a := p.cfg.LocalAddr; a.IsValid() && a.Is6() == v6 {
		laddr = &net.IPAddr{IP: a.AsSlice()}
	}
	c, err := net.ListenIP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("probe: raw %s socket (needs CAP_NET_RAW): %w", kind, err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
		}
		// Transmit stamps come back without the packet (OPT_TSONLY) and
		// carry the socket's send counter (OPT_ID): a clone of every
		// probe on the error queue would cost the receive buffer and the
		// reader as much as the answers themselves.
		if p.kstamp && unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPING_NEW,
			tsFlags|unix.SOF_TIMESTAMPING_OPT_ID|unix.SOF_TIMESTAMPING_OPT_TSONLY) != nil {
			p.kstamp = false
		}
	})
	r := &rawSock{p: p, conn: c, rc: rc, parse: parse, wm: newMsg(0, 0),
		flows: make(map[rawKey]chan rawEvent), byID: make(map[uint32]rawSent), done: make(chan struct{})}
	go r.readLoop()
	*slot = r
	return r, nil
}

func (r *rawSock) close() {
	r.conn.Close()
	<-r.done
}

func (r *rawSock) register(k rawKey) (chan rawEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.flows[k]; dup {
		return nil, false
	}
	ch := make(chan rawEvent, 8)
	r.flows[k] = ch
	return ch, true
}

func (r *rawSock) unregister(k rawKey) {
	r.mu.Lock()
	delete(r.flows, k)
	r.mu.Unlock()
}

func (r *rawSock) dispatch(k rawKey, ev rawEvent) {
	r.mu.Lock()
	ch := r.flows[k]
	r.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- ev:
	default: // a flood of answers for one flow: the probe sees enough of them
	}
}

// send writes one probe of flow k with sequence seq to dst, asking for a
// kernel transmit stamp.
func (r *rawSock) send(pkt []byte, dst netip.Addr, k rawKey, seq uint32) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	var oob []byte
	if r.p.kstamp {
		oob = txStampCmsg(r.woob[:])
		// Known before the send: the stamp may be read before it returns.
		r.mu.Lock()
		r.byID[r.sent] = rawSent{k: k, seq: seq}
		delete(r.byID, r.sent-txIDWindow)
		r.mu.Unlock()
	}
	var serr error
	err := r.rc.Write(func(fd uintptr) bool {
		serr = r.wm.send(fd, pkt, oob, netip.AddrPortFrom(dst, 0))
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if r.p.kstamp && err == nil {
		r.sent++
	}
	return err
}

// readLoop reads answers and, from the error queue, transmit stamps until
// the socket is closed.
func (r *rawSock) readLoop() {
	defer close(r.done)
	b := newBatch(readBatch, 2048, 512, nil)
	eb := newBatch(readBatch, 2048, 512, nil)
	for {
		closed := false
		err := r.rc.Read(func(fd uintptr) bool {
			for {
				for {
					n, err := eb.recv(fd, unix.MSG_ERRQUEUE)
					if err != nil || n == 0 {
						break
					}
					r.handle(eb, n, true)
					if n < readBatch {
						break
					}
				}
				n, err := b.recv(fd, 0)
				switch err {
				case nil:
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				case unix.EBADF:
					closed = true
					return true
				default:
					return false
				}
				r.handle(b, n, false)
				if n < readBatch {
					return false
				}
			}
		})
		if err != nil || closed {
			return
		}
	}
}

func (r *rawSock) handle(bb *batch, n int, errq bool) {
	tUser := nanotime()
	for i := range n {
		m := &bb.msgs[i]
		ci := parseCmsgs(m.oob[:m.oobn])
		pkt := m.buf[:m.n]
		if errq {
			if !ci.hasErr || ci.ee.Origin != unix.SO_EE_ORIGIN_TIMESTAMPING || ci.stamp == 0 {
				continue
			}
			if len(pkt) == 0 { // OPT_TSONLY: the stamp names its send by OPT_ID
				r.mu.Lock()
				ps, ok := r.byID[ci.ee.Data]
				r.mu.Unlock()
				if ok {
					r.dispatch(ps.k, rawEvent{tx: true, seq: ps.seq, tUser: tUser, tKern: r.p.clk.mono(ci.stamp)})
				}
				continue
			}
			// The looped-back copy starts at the link header on Ethernet.
			if len(pkt) >= 14 && binary.BigEndian.Uint16(pkt[12:14]) == 0x0800 && len(pkt) > 14 && pkt[14]>>4 == 4 {
				pkt = pkt[14:]
			}
		}
		k, ev, ok := r.parse(pkt, m.from().Addr().Unmap(), errq)
		if !ok {
			continue
		}
		ev.tUser = tUser
		if ci.stamp != 0 {
			ev.tKern = r.p.clk.mono(ci.stamp)
		}
		r.dispatch(k, ev)
	}
}

// ipv4 splits an IPv4 packet into its addresses, protocol and payload.
func ipv4(b []byte) (src, dst netip.Addr, proto uint8, l4 []byte, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	ihl := int(b[0]&0xf) * 4
	if ihl < 20 || len(b) < ihl {
		return
	}
	return netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20])), b[9], b[ihl:], true
}

// inetChecksum is the Internet checksum (RFC 1071) of b, continuing sum.
func inetChecksum(sum uint32, b []byte) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// rawFlow is one icmp or tcp flow: build makes the probe for a sequence
// number, the shared socket brings back its stamps and answer.
type rawFlow struct {
	p       *TargetProber
	r       *rawSock
	kind    TargetKind
	dst     netip.AddrPort
	key     rawKey
	local   uint16 // echo identifier or our tcp port
	seq     uint32
	step    uint32
	ch      chan rawEvent
	build   func(seq uint32) []byte
	onClose func()
	ebpf    bool // the loader stamps this flow (ebk)
	ebk     ebpfKey
}

// watchEBPF asks the loader to stamp the flow; Close stops it.
func (f *rawFlow) watchEBPF() {
	if f.p.watch(f.kind, f.dst.Addr(), f.local) {
		f.ebpf, f.ebk = true, ebpfKey{proto: protoOf(f.kind, f.dst.Addr().Is6()), remote: f.dst.Addr(), port: f.local}
	}
}

func (f *rawFlow) Close() error {
	f.r.unregister(f.key)
	if f.ebpf {
		f.p.unwatch(f.kind, f.dst.Addr(), f.local)
	}
	if f.onClose != nil {
		f.onClose()
	}
	return nil
}

// Probe sends one probe and waits for its answer, its transmit stamp (up
// to StampWait after the answer), the timeout or ctx.
func (f *rawFlow) Probe(ctx context.Context, timeout time.Duration) TargetResult {
	f.seq += f.step
	if f.kind == KindICMP {
		f.seq &= 0xffff // the echo sequence is 16 bits on the wire
	}
	seq := f.seq
	res := TargetResult{Kind: f.kind, Addr: f.dst.Addr(), Port: f.dst.Port(), SrcPort: f.local, Seq: uint64(seq), Source: SourceUser}
	for len(f.ch) > 0 { // answers to earlier, timed-out probes
		<-f.ch
	}
	pkt := f.build(seq)
	var w *ebpfWait
	if f.ebpf {
		w = f.p.eb.arm(f.ebk, uint64(seq))
		defer f.p.eb.disarm(f.ebk, w)
	}
	res.Sent = time.Now()
	t1u := nanotime()
	if err := f.r.send(pkt, f.dst.Addr(), f.key, seq); err != nil {
		res.Lost, res.Reply = true, ReplySendError
		return res
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var (
		t1k    int64
		got    *rawEvent
		waitTx <-chan time.Time
	)
	for {
		select {
		case ev := <-f.ch:
			if ev.seq != seq {
				continue
			}
			if ev.tx {
				t1k = ev.tKern
				if got == nil {
					continue
				}
			} else if got == nil {
				got = &ev
				if f.p.kstamp && t1k == 0 && !ev.lost {
					waitTx = time.After(f.p.cfg.StampWait)
					continue
				}
			} else {
				continue
			}
		case <-waitTx:
		case <-timer.C:
			if got == nil {
				res.Lost, res.Reply = true, ReplyTimeout
				return res
			}
		case <-ctx.Done():
			res.Lost, res.Reply = true, ReplyTimeout
			return res
		}
		res.Reply = got.reply
		if got.lost {
			res.Lost = true
			return res
		}
		f.p.finish(&res, w, t1u, got.tUser, t1k, got.tKern)
		return res
	}
}

// openRaw opens an icmp or tcp flow on the shared raw socket.
func (p *TargetProber) openRaw(kind TargetKind, src netip.Addr, dst netip.AddrPort) (TargetFlow, error) {
	r, err := p.rawSocket(kind, dst.Addr().Is6())
	if err != nil {
		return nil, err
	}
	if kind == KindICMP {
		return p.openICMP(r, src, dst)
	}
	return p.openTCP(r, src, dst)
}
