package probe

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendBatchLen is how many pings one sendmmsg carries at most.
const sendBatchLen = 64

// sendBatch is one source socket's sendmmsg buffers; guarded by sock.wmu.
type sendBatch struct {
	hdrs  [sendBatchLen]mmsghdr
	iovs  [sendBatchLen]unix.Iovec
	names [sendBatchLen]unix.RawSockaddrInet6
	bufs  [sendBatchLen][MaxLen]byte
	oob   [64]byte // the same SO_TIMESTAMPING request for every message
	keys  [sendBatchLen]FlowKey
	seqs  [sendBatchLen]uint64
	// One sendPings call: n msgs, the progress of sendmmsg through them,
	// which failed and why.
	n, sent, tries int
	failed         [sendBatchLen]bool
	errno          [sendBatchLen]unix.Errno
	write          func(fd uintptr) bool // b.sendmmsg
}

// PingBatch sends one ping on each flow, like Ping, but with one sendmmsg
// per source port (up to 64 pings a syscall) instead of one sendmsg per
// ping: with the pinger's schedule, the pings due in one tick share a few
// syscalls. It sorts flows by source port in place. A ping that could not
// be sent is reported lost, as with Ping; the error joins one error per
// port that failed. With the user time source every ping of a syscall gets
// the T1 read just before it.
func (e *Engine) PingBatch(flows []FlowKey) error {
	select {
	case <-e.closed:
		return ErrClosed
	default:
	}
	slices.SortFunc(flows, func(a, b FlowKey) int { return cmp.Compare(a.SrcPort, b.SrcPort) })
	var errs []error
	for len(flows) > 0 {
		n := 1
		for n < len(flows) && flows[n].SrcPort == flows[0].SrcPort {
			n++
		}
		run := flows[:n]
		flows = flows[n:]
		s := e.srcSock(run[0].SrcPort)
		if s == nil {
			errs = append(errs, fmt.Errorf("probe: source port %d outside %d-%d", run[0].SrcPort, e.cfg.SrcPortStart, e.cfg.SrcPortEnd))
			continue
		}
		for len(run) > 0 {
			k := min(len(run), sendBatchLen)
			if _, err := e.sendPings(s, run[:k]); err != nil {
				errs = append(errs, err)
			}
			run = run[k:]
		}
	}
	return errors.Join(errs...)
}

// sendPings registers and sends one ping per flow of fs (all on s's port,
// at most sendBatchLen) and returns the first one's seq. Ping is a batch of
// one.
func (e *Engine) sendPings(s *sock, fs []FlowKey) (uint64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wb == nil {
		s.wb = new(sendBatch)
	}
	b := s.wb
	var oob []byte
	if e.txStamp {
		oob = txStampCmsg(b.oob[:])
	}
	now, wall := nanotime(), time.Now()
	for i, k := range fs {
		seq := e.m.register(k, now, wall)
		p := Packet{Type: TypePing, SrcPort: k.SrcPort, Epoch: e.epoch, Seq: seq, T1: now}
		data := s.enc.AppendEncode(b.bufs[i][:0], &p)
		b.keys[i], b.seqs[i] = k, seq
		b.iovs[i].Base = unsafe.SliceData(data)
		b.iovs[i].SetLen(len(data))
		h := &b.hdrs[i]
		*h = mmsghdr{}
		h.hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.hdr.Namelen = putSockaddr(&b.names[i], netip.AddrPortFrom(k.Peer, e.cfg.PingPort))
		h.hdr.Iov = &b.iovs[i]
		h.hdr.Iovlen = 1
		if oob != nil {
			h.hdr.Control = unsafe.SliceData(oob)
			h.hdr.SetControllen(len(oob))
		}
	}
	b.n, b.sent, b.tries = len(fs), 0, 0
	clear(b.failed[:b.n])
	clear(b.errno[:b.n])
	if b.write == nil {
		b.write = b.sendmmsg // one method value, made once: no closure per call
	}
	if err := s.rc.Write(b.write); err != nil { // socket closed: nothing more was sent
		for i := b.sent; i < b.n; i++ {
			b.failed[i] = true
		}
		e.pingsFailed(b)
		return b.seqs[0], fmt.Errorf("probe: pings from port %d: %w", s.port, err)
	}
	return b.seqs[0], e.pingsFailed(b)
}

// sendmmsg sends msgs [0, n) of b, from b.sent on; a msg the kernel refuses
// is marked failed and skipped. It is the callback of RawConn.Write.
func (b *sendBatch) sendmmsg(fd uintptr) bool {
	for b.sent < b.n {
		n, _, en := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.sent])), uintptr(b.n-b.sent), 0, 0, 0)
		if en == 0 {
			b.sent += int(n)
			continue
		}
		if b.tries++; b.tries <= 16 && retrySend(en) {
			continue // see msg.send: an ICMP error reported once
		}
		// The first unsent ping failed: note it, go on with the rest.
		b.failed[b.sent], b.errno[b.sent] = true, en
		b.sent++
	}
	return true
}

// pingsFailed reports b's failed pings lost and counts the sent ones; it
// returns the first failure.
func (e *Engine) pingsFailed(b *sendBatch) error {
	var first error
	failed := 0
	for i := range b.n {
		if !b.failed[i] {
			continue
		}
		failed++
		e.m.sendFailed(b.keys[i], b.seqs[i])
		e.met.sendErrors.Inc()
		if first == nil && b.errno[i] != 0 {
			first = fmt.Errorf("probe: ping %s from port %d: %w", b.keys[i].Peer, b.keys[i].SrcPort, b.errno[i])
		}
	}
	e.met.pingsSent.Add(float64(b.n - failed))
	return first
}
