package probe

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// TCP probes: a SYN from a raw socket. A SYN-ACK (open port) or RST
// (closed port) is an answer; the kernel, which holds no connection for
// it, resets the half-open connection, so no handshake ever completes.
// Each flow reserves its source port by binding a TCP socket it never
// listens or connects on, so no local connection can share the port.
// Silence (a filtering firewall) is a loss.

const tcpSynLen = 24 // header with one MSS option

func (p *TargetProber) openTCP(r *rawSock, src netip.Addr, dst netip.AddrPort) (TargetFlow, error) {
	fd, port, err := reserveTCPPort(src)
	if err != nil {
		return nil, err
	}
	k := rawKey{remote: dst.Addr(), a: dst.Port(), b: port}
	ch, ok := r.register(k)
	if !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("probe: tcp flow %s→%s already open", netip.AddrPortFrom(src, port), dst)
	}
	var iss [4]byte
	rand.Read(iss[:])
	f := &rawFlow{p: p, r: r, kind: KindTCP, dst: dst, key: k, local: port, ch: ch,
		seq: binary.BigEndian.Uint32(iss[:]), step: 1 << 20, onClose: func() { unix.Close(fd) }}
	f.build = func(seq uint32) []byte { return buildSYN(src, dst, port, seq) }
	f.watchEBPF()
	return f, nil
}

// reserveTCPPort binds a TCP socket to src:0 and returns it and its port.
func reserveTCPPort(src netip.Addr) (int, uint16, error) {
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: src.As16()}
	if src.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: src.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("probe: tcp port reservation: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("probe: tcp port reservation on %s: %w", src, err)
	}
	sa, err = unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("probe: tcp port reservation: %w", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return fd, uint16(a.Port), nil
	case *unix.SockaddrInet6:
		return fd, uint16(a.Port), nil
	}
	unix.Close(fd)
	return -1, 0, fmt.Errorf("probe: tcp port reservation: unexpected address %T", sa)
}

func buildSYN(src netip.Addr, dst netip.AddrPort, sport uint16, seq uint32) []byte {
	b := make([]byte, tcpSynLen)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = (tcpSynLen / 4) << 4
	b[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(b[14:], 64240)
	b[20], b[21] = 2, 4 // MSS 1460
	binary.BigEndian.PutUint16(b[22:], 1460)
	binary.BigEndian.PutUint16(b[16:], inetChecksum(pseudoSum(src, dst.Addr(), tcpSynLen), b))
	return b
}

// pseudoSum is the unfolded sum of the TCP pseudo-header (RFC 793 for
// IPv4, RFC 8200 §8.1 for IPv6).
func pseudoSum(src, dst netip.Addr, n int) uint32 {
	var ph []byte
	if src.Is4() {
		s4, d4 := src.As4(), dst.As4()
		ph = make([]byte, 12)
		copy(ph[0:], s4[:])
		copy(ph[4:], d4[:])
		ph[9] = unix.IPPROTO_TCP
		binary.BigEndian.PutUint16(ph[10:], uint16(n))
	} else {
		s16, d16 := src.As16(), dst.As16()
		ph = make([]byte, 40)
		copy(ph[0:], s16[:])
		copy(ph[16:], d16[:])
		binary.BigEndian.PutUint32(ph[32:], uint32(n))
		ph[39] = unix.IPPROTO_TCP
	}
	var sum uint32
	for i := 0; i < len(ph); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ph[i:]))
	}
	return sum
}

// parseTCPTarget maps a SYN-ACK or RST answering our SYN, or the looped
// back copy of our SYN (tx), to its flow. The event's seq is our initial
// sequence number (the answer's ack − 1).
func parseTCPTarget(pkt []byte, tx bool) (rawKey, rawEvent, bool) {
	src, dst, proto, l4, ok := ipv4(pkt)
	if !ok || proto != unix.IPPROTO_TCP {
		return rawKey{}, rawEvent{}, false
	}
	return parseTCPSegment(l4, src, dst, tx)
}

// parseTCP6Target parses an answer from an IPv6 raw TCP socket, which
// delivers the segment without the IPv6 header: from is its source.
func parseTCP6Target(seg []byte, from netip.Addr) (rawKey, rawEvent, bool) {
	return parseTCPSegment(seg, from, netip.Addr{}, false)
}

// parseTCPSegment maps one TCP segment between src and dst (ours when tx).
func parseTCPSegment(l4 []byte, src, dst netip.Addr, tx bool) (rawKey, rawEvent, bool) {
	if len(l4) < 20 {
		return rawKey{}, rawEvent{}, false
	}
	sport, dport := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	flags := l4[13]
	const fin, syn, rst, ack = 0x01, 0x02, 0x04, 0x10
	if tx {
		if flags&(syn|ack) != syn {
			return rawKey{}, rawEvent{}, false
		}
		return rawKey{remote: dst, a: dport, b: sport}, rawEvent{tx: true, seq: binary.BigEndian.Uint32(l4[4:8])}, true
	}
	if flags&ack == 0 {
		return rawKey{}, rawEvent{}, false
	}
	ev := rawEvent{seq: binary.BigEndian.Uint32(l4[8:12]) - 1}
	switch {
	case flags&(syn|rst|fin) == syn:
		ev.reply = ReplySynAck
	case flags&rst != 0:
		ev.reply = ReplyRST
	default:
		return rawKey{}, rawEvent{}, false
	}
	return rawKey{remote: src, a: sport, b: dport}, ev, true
}
