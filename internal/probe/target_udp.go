package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UDP probes: a 16-byte datagram ("DNMT" and the sequence) from the flow's
// own unconnected socket. Any datagram from the target's address, or an
// ICMP port unreachable quoting the probe (the port is closed but the host
// is up), answers it; another ICMP unreachable (host, net, administratively
// prohibited) is a loss, as is silence. A flow is one socket bound to an
// ephemeral port, so its 5-tuple (and ECMP path) is fixed for its life.

const udpTargetMagic = 0x444E4D54 // "DNMT"

type udpFlow struct {
	p    *TargetProber
	conn *net.UDPConn
	rc   syscall.RawConn
	dst  netip.AddrPort
	port uint16
	seq  uint64
	b    *batch
	eb   *batch
	wm   *msg
	woob [64]byte
	ebpf bool // the loader stamps this flow (ebk)
	ebk  ebpfKey
}

func (p *TargetProber) openUDP(src netip.Addr, dst netip.AddrPort) (TargetFlow, error) {
	c, ok, err := listenUDP(netip.AddrPortFrom(src, 0), p.kstamp)
	if err != nil {
		return nil, err
	}
	if !ok {
		p.kstamp = false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	f := &udpFlow{p: p, conn: c, rc: rc, dst: dst, port: c.LocalAddr().(*net.UDPAddr).AddrPort().Port(),
		b: newBatch(4, 2048, 512, nil), eb: newBatch(4, 2048, 512, nil), wm: newMsg(0, 0)}
	if p.watch(KindUDP, dst.Addr(), f.port) {
		f.ebpf, f.ebk = true, ebpfKey{proto: unix.IPPROTO_UDP, remote: dst.Addr(), port: f.port}
	}
	return f, nil
}

func (f *udpFlow) Close() error {
	if f.ebpf {
		f.p.unwatch(KindUDP, f.dst.Addr(), f.port)
	}
	return f.conn.Close()
}

// udpAnswer is what the reads of one probe found.
type udpAnswer struct {
	got          bool
	reply        string
	lost         bool
	t1k          int64
	tUser, tKern int64
}

func (f *udpFlow) Probe(ctx context.Context, timeout time.Duration) TargetResult {
	f.seq++
	res := TargetResult{Kind: KindUDP, Addr: f.dst.Addr(), Port: f.dst.Port(), SrcPort: f.port, Seq: f.seq, Source: SourceUser}
	f.drain()
	var pl [16]byte
	binary.BigEndian.PutUint32(pl[0:], udpTargetMagic)
	binary.BigEndian.PutUint64(pl[4:], f.seq)
	var oob []byte
	if f.p.kstamp {
		oob = txStampCmsg(f.woob[:])
	}
	var w *ebpfWait
	if f.ebpf {
		w = f.p.eb.arm(f.ebk, f.seq)
		defer f.p.eb.disarm(f.ebk, w)
	}
	res.Sent = time.Now()
	t1u := nanotime()
	var serr error
	if err := f.rc.Write(func(fd uintptr) bool {
		serr = f.wm.send(fd, pl[:], oob, f.dst)
		return serr != unix.EAGAIN
	}); err != nil || serr != nil {
		res.Lost, res.Reply = true, ReplySendError
		return res
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// ctx ends the wait: the read deadline moves to the past.
	defer context.AfterFunc(ctx, func() { f.conn.SetReadDeadline(time.Unix(1, 0)) })()
	var a udpAnswer
	stampWait := false
	for {
		if ctx.Err() != nil {
			res.Lost, res.Reply = true, ReplyTimeout
			return res
		}
		f.conn.SetReadDeadline(deadline)
		err := f.rc.Read(func(fd uintptr) bool { return f.read(fd, &a) })
		switch {
		case a.complete(f.p.kstamp):
		case a.got && err == nil && !stampWait:
			// Answered, transmit stamp pending: wait StampWait more.
			stampWait, deadline = true, time.Now().Add(f.p.cfg.StampWait)
			continue
		case a.got && errors.Is(err, os.ErrDeadlineExceeded):
			// The transmit stamp did not come: user stamps.
		case err != nil:
			res.Lost, res.Reply = true, ReplyTimeout
			return res
		default:
			continue
		}
		break
	}
	res.Reply = a.reply
	if a.lost {
		res.Lost = true
		return res
	}
	f.p.finish(&res, w, t1u, a.tUser, a.t1k, a.tKern)
	return res
}

// drain discards what is queued from earlier probes.
func (f *udpFlow) drain() {
	f.rc.Read(func(fd uintptr) bool {
		for {
			n, err := f.eb.recv(fd, unix.MSG_ERRQUEUE)
			if err != nil || n == 0 {
				break
			}
		}
		for {
			n, err := f.b.recv(fd, 0)
			if err != nil || n == 0 {
				return true
			}
		}
	})
}

// read consumes what the socket has for the current probe (f.seq). It
// returns true (stop waiting) once the answer and, with kernel stamps, the
// transmit stamp are in.
func (f *udpFlow) read(fd uintptr, a *udpAnswer) bool {
	before := a.got
	for {
		n, err := f.eb.recv(fd, unix.MSG_ERRQUEUE)
		if err != nil || n == 0 {
			break
		}
		f.take(f.eb, n, true, a)
	}
	for {
		n, err := f.b.recv(fd, 0)
		if err == unix.EINTR || err == unix.ECONNREFUSED || err == unix.EHOSTUNREACH || err == unix.ENETUNREACH {
			continue // an ICMP error reported as the read's error; it is on the error queue
		}
		if err != nil || n == 0 {
			break
		}
		f.take(f.b, n, false, a)
	}
	// Stop when complete, or when the answer just came without its
	// transmit stamp (the caller shortens the deadline); else keep waiting
	// in the poller.
	return a.complete(f.p.kstamp) || (a.got && !before)
}

// complete: the answer is in and needs no transmit stamp or has it.
func (a *udpAnswer) complete(kstamp bool) bool {
	return a.got && (a.t1k != 0 || !kstamp || a.lost)
}

func (f *udpFlow) take(bb *batch, n int, errq bool, a *udpAnswer) {
	tUser := nanotime()
	for i := range n {
		m := &bb.msgs[i]
		ci := parseCmsgs(m.oob[:m.oobn])
		kern := int64(0)
		if ci.stamp != 0 {
			kern = f.p.clk.mono(ci.stamp)
		}
		if !errq {
			if a.got || m.from().Addr().Unmap() != f.dst.Addr() {
				continue
			}
			*a = udpAnswer{got: true, reply: ReplyAnswer, t1k: a.t1k, tUser: tUser, tKern: kern}
			continue
		}
		if !ci.hasErr {
			continue
		}
		switch ci.ee.Origin {
		case unix.SO_EE_ORIGIN_TIMESTAMPING:
			if _, pl, ok := txPacket(m.buf[:m.n]); ok && f.ours(pl) {
				a.t1k = kern
			}
		case unix.SO_EE_ORIGIN_ICMP, unix.SO_EE_ORIGIN_ICMP6:
			if a.got || !f.ours(m.buf[:m.n]) {
				continue
			}
			_, reached := classifyICMP(ci.ee.Origin == unix.SO_EE_ORIGIN_ICMP, ci.ee.Type, ci.ee.Code, f.dst.Addr(), f.dst.Addr())
			portUnreach := (ci.ee.Origin == unix.SO_EE_ORIGIN_ICMP && ci.ee.Type == 3 && ci.ee.Code == 3) ||
				(ci.ee.Origin == unix.SO_EE_ORIGIN_ICMP6 && ci.ee.Type == 1 && ci.ee.Code == 4)
			if !reached && !portUnreach {
				continue // time exceeded: not an answer
			}
			*a = udpAnswer{got: true, reply: ReplyPortUnreachable, t1k: a.t1k, tUser: tUser, tKern: kern}
			if !portUnreach || ci.offender.Unmap() != f.dst.Addr() {
				a.reply, a.lost = ReplyUnreachable, true
			}
		}
	}
}

// ours says whether pl is the payload of the flow's current probe.
func (f *udpFlow) ours(pl []byte) bool {
	return len(pl) >= 12 && binary.BigEndian.Uint32(pl) == udpTargetMagic && binary.BigEndian.Uint64(pl[4:]) == f.seq
}
