package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket options the engine sets. SO_TIMESTAMPING_NEW reports
// __kernel_timespec (64-bit) stamps on every architecture.
const rcvBuf = 4 << 20

// Receive stamps on every datagram; transmit stamps are requested per
// sendmsg (txStampCmsg) for pings only, so acks and trace probes do not
// fill the error queue.
const tsFlags = unix.SOF_TIMESTAMPING_SOFTWARE | unix.SOF_TIMESTAMPING_RX_SOFTWARE

// listenUDP opens an unconnected UDP socket bound to ap with IP_RECVERR (ICMP
// errors and tx stamps come through the error queue) and, if stamps, software
// timestamping. It reports whether timestamping was accepted.
func listenUDP(ap netip.AddrPort, stamps bool) (*net.UDPConn, bool, error) {
	var tsOK bool
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if ap.Addr().Is4() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
			}
			if serr != nil {
				serr = fmt.Errorf("IP_RECVERR: %w", serr)
				return
			}
			// A deep receive buffer: a burst of acks while the reader is
			// descheduled must not be dropped here and counted as reverse
			// loss. SO_RCVBUFFORCE (root) ignores rmem_max; best effort.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
			}
			if stamps {
				tsOK = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPING_NEW, tsFlags) == nil
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	pc, err := lc.ListenPacket(context.Background(), network, ap.String())
	if err != nil {
		return nil, false, err
	}
	return pc.(*net.UDPConn), tsOK, nil
}

// msg is a reusable recvmsg/sendmsg buffer set: one per goroutine, so the hot
// path does not allocate.
type msg struct {
	hdr  unix.Msghdr
	iov  unix.Iovec
	name unix.RawSockaddrInet6 // large enough for sockaddr_in too
	buf  []byte
	oob  []byte
	n    int // bytes received
	oobn int
	dec  *Codec // decoding codec of the goroutine owning this msg
}

func newMsg(bufLen, oobLen int) *msg {
	return &msg{buf: make([]byte, bufLen), oob: make([]byte, oobLen)}
}

func (m *msg) prep(data []byte, oob []byte) {
	m.iov.Base = unsafe.SliceData(data)
	m.iov.SetLen(len(data))
	m.hdr.Name = (*byte)(unsafe.Pointer(&m.name))
	m.hdr.Namelen = uint32(unsafe.Sizeof(m.name))
	m.hdr.Iov = &m.iov
	m.hdr.Iovlen = 1
	m.hdr.Control = nil
	m.hdr.SetControllen(0)
	if len(oob) > 0 {
		m.hdr.Control = unsafe.SliceData(oob)
		m.hdr.SetControllen(len(oob))
	}
	m.hdr.Flags = 0
}

// mmsghdr is struct mmsghdr: a msghdr and the length the kernel received.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

// batch is a set of msgs read with one recvmmsg: at a high ack rate one
// syscall and one poller wakeup bring up to len(msgs) datagrams.
type batch struct {
	hdrs []mmsghdr
	msgs []msg
}

// newBatch makes n msgs decoding with dec, the codec of the reader
// goroutine that owns the batch.
func newBatch(n, bufLen, oobLen int, dec *Codec) *batch {
	b := &batch{hdrs: make([]mmsghdr, n), msgs: make([]msg, n)}
	for i := range b.msgs {
		b.msgs[i] = msg{buf: make([]byte, bufLen), oob: make([]byte, oobLen), dec: dec}
	}
	return b
}

// recv does one non-blocking recvmmsg with flags (0 or MSG_ERRQUEUE) and
// returns how many msgs it filled. An error that comes after some datagrams
// is reported by the next call.
func (b *batch) recv(fd uintptr, flags int) (int, error) {
	for i := range b.msgs {
		m := &b.msgs[i]
		m.prep(m.buf, m.oob)
		b.hdrs[i] = mmsghdr{hdr: m.hdr}
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)),
		uintptr(flags|unix.MSG_DONTWAIT), 0, 0)
	if e != 0 {
		return 0, e
	}
	for i := range int(n) {
		m, h := &b.msgs[i], &b.hdrs[i]
		m.hdr = h.hdr
		m.n, m.oobn = int(h.len), int(h.hdr.Controllen)
	}
	return int(n), nil
}

// from decodes the sockaddr of the last recv.
func (m *msg) from() netip.AddrPort {
	switch m.name.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&m.name))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(m.name.Addr), ntohs(m.name.Port))
	}
	return netip.AddrPort{}
}

func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return binary.BigEndian.Uint16(b[:])
}

func htons(p uint16) uint16 { return ntohs(p) }

// send does one sendmsg of data to dst with optional ancillary data.
func (m *msg) send(fd uintptr, data []byte, oob []byte, dst netip.AddrPort) error {
	m.prep(data, oob)
	m.hdr.Namelen = putSockaddr(&m.name, dst)
	for try := 0; ; try++ {
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&m.hdr)), 0)
		switch {
		case e == 0:
			return nil
		case try < 16 && retrySend(e):
			continue
		}
		return e
	}
}

// retrySend says a failed send should simply be tried again. With
// IP_RECVERR every ICMP error (time exceeded included) also sets sk_err,
// which the next send reports once instead of sending; the error itself is
// already on the error queue. During a trace errors keep arriving, hence
// callers allow several tries.
func retrySend(e unix.Errno) bool {
	switch e {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EPROTO, unix.EINTR:
		return true
	}
	return false
}

// putSockaddr writes dst into sa as a sockaddr_in or sockaddr_in6 and
// returns its length.
func putSockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) uint32 {
	if dst.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(dst.Port()), Addr: dst.Addr().As4()}
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(dst.Port()), Addr: dst.Addr().As16()}
	return unix.SizeofSockaddrInet6
}

// ttlCmsg builds an IP_TTL (or IPV6_HOPLIMIT) control message into b.
func ttlCmsg(b []byte, v6 bool, ttl int) []byte {
	n := unix.CmsgSpace(4)
	b = b[:n]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	if v6 {
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT
	} else {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TTL
	}
	h.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = int32(ttl)
	return b
}

// txStampCmsg builds a SO_TIMESTAMPING control message asking for a software
// transmit stamp of this one datagram.
func txStampCmsg(b []byte) []byte {
	n := unix.CmsgSpace(4)
	b = b[:n]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_TIMESTAMPING_NEW
	h.SetLen(unix.CmsgLen(4))
	*(*uint32)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = unix.SOF_TIMESTAMPING_TX_SOFTWARE
	return b
}

// cmsgInfo is what the engine wants from the ancillary data of one message.
type cmsgInfo struct {
	stamp    int64 // software stamp, CLOCK_REALTIME ns; 0 if none
	hasErr   bool
	ee       unix.SockExtendedErr
	offender netip.Addr
}

// parseCmsgs walks the control messages without allocating.
func parseCmsgs(oob []byte) (ci cmsgInfo) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPING_NEW && len(data) >= 16:
			// struct scm_timestamping64: ts[0] is the software stamp.
			sec := int64(binary.NativeEndian.Uint64(data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(data[8:16]))
			if sec != 0 || nsec != 0 {
				ci.stamp = sec*1e9 + nsec
			}
		case (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_RECVERR) ||
			(h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_RECVERR):
			if len(data) >= sizeofSockExtendedErr {
				ci.hasErr = true
				ci.ee = *(*unix.SockExtendedErr)(unsafe.Pointer(&data[0]))
				off := data[sizeofSockExtendedErr:]
				if len(off) >= unix.SizeofSockaddrInet4 && binary.NativeEndian.Uint16(off) == unix.AF_INET {
					ci.offender = netip.AddrFrom4([4]byte(off[4:8]))
				} else if len(off) >= unix.SizeofSockaddrInet6 && binary.NativeEndian.Uint16(off) == unix.AF_INET6 {
					ci.offender = netip.AddrFrom16([16]byte(off[8:24]))
				}
			}
		}
		oob = oob[min(unix.CmsgSpace(l-unix.SizeofCmsghdr), len(oob)):]
	}
	return
}

// txPacket locates the dnms payload and the destination in a looped-back
// transmit-timestamp packet from the error queue (which starts at the link
// layer header on Ethernet and loopback, or at the IP header otherwise).
func txPacket(b []byte) (dst netip.Addr, payload []byte, ok bool) {
	try := func(off int) (netip.Addr, []byte, bool) {
		if off >= len(b) {
			return netip.Addr{}, nil, false
		}
		ip := b[off:]
		switch ip[0] >> 4 {
		case 4:
			if len(ip) < 20 || ip[9] != unix.IPPROTO_UDP {
				return netip.Addr{}, nil, false
			}
			ihl := int(ip[0]&0xf) * 4
			if len(ip) < ihl+8 {
				return netip.Addr{}, nil, false
			}
			return netip.AddrFrom4([4]byte(ip[16:20])), ip[ihl+8:], true
		case 6:
			if len(ip) < 48 || ip[6] != unix.IPPROTO_UDP {
				return netip.Addr{}, nil, false
			}
			return netip.AddrFrom16([16]byte(ip[24:40])), ip[48:], true
		}
		return netip.Addr{}, nil, false
	}
	if len(b) >= 14 {
		if et := binary.BigEndian.Uint16(b[12:14]); et == 0x0800 || et == 0x86dd {
			if d, p, ok := try(14); ok {
				return d, p, true
			}
		}
	}
	return try(0)
}

const sizeofSockExtendedErr = int(unsafe.Sizeof(unix.SockExtendedErr{}))
