package probe

import (
	"encoding/binary"
	"net/netip"
)

// ICMP echo probes: type 8 with the flow's identifier and a 16-bit
// sequence, 16 bytes of payload ("DNMS" and the sequence). Flows differ
// by identifier only; routers that hash ICMP on addresses alone send them
// all one way.

const icmpEchoLen = 8 + 16

// openICMP allocates a free echo identifier for a flow to dst.
func (p *TargetProber) openICMP(r *rawSock, _ netip.Addr, dst netip.AddrPort) (TargetFlow, error) {
	for range 1 << 16 {
		p.mu.Lock()
		p.nextID++
		id := p.nextID
		p.mu.Unlock()
		k := rawKey{remote: dst.Addr(), a: id}
		ch, ok := r.register(k)
		if !ok {
			continue
		}
		f := &rawFlow{p: p, r: r, kind: KindICMP, dst: netip.AddrPortFrom(dst.Addr(), 0), key: k, local: id, step: 1, ch: ch}
		v6 := dst.Addr().Is6()
		f.build = func(seq uint32) []byte { return buildEcho(id, uint16(seq), v6) }
		f.watchEBPF()
		return f, nil
	}
	return nil, ErrTraceBusy
}

// buildEcho makes an echo request; for IPv6 (type 128) the kernel fills
// in the checksum, which covers a pseudo-header.
func buildEcho(id, seq uint16, v6 bool) []byte {
	b := make([]byte, icmpEchoLen)
	b[0] = 8
	if v6 {
		b[0] = 128
	}
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	binary.BigEndian.PutUint32(b[8:], Magic)
	binary.BigEndian.PutUint64(b[12:], uint64(seq))
	if !v6 {
		binary.BigEndian.PutUint16(b[2:], inetChecksum(0, b))
	}
	return b
}

// parseICMPTarget maps an echo reply, the looped-back copy of our echo
// request (tx), or a destination unreachable quoting our echo request to
// its flow. The sequence is 16 bits on the wire: flows compare the low 16.
func parseICMPTarget(pkt []byte, tx bool) (rawKey, rawEvent, bool) {
	src, dst, proto, l4, ok := ipv4(pkt)
	if !ok || proto != 1 || len(l4) < 8 {
		return rawKey{}, rawEvent{}, false
	}
	id, seq := binary.BigEndian.Uint16(l4[4:6]), uint32(binary.BigEndian.Uint16(l4[6:8]))
	switch {
	case tx && l4[0] == 8:
		return rawKey{remote: dst, a: id}, rawEvent{tx: true, seq: seq}, true
	case tx:
	case l4[0] == 0:
		return rawKey{remote: src, a: id}, rawEvent{seq: seq, reply: ReplyEcho}, true
	case l4[0] == 3: // destination unreachable quoting the echo request
		_, qdst, qproto, q, ok := ipv4(l4[8:])
		if ok && qproto == 1 && len(q) >= 8 && q[0] == 8 {
			return rawKey{remote: qdst, a: binary.BigEndian.Uint16(q[4:6])},
				rawEvent{seq: uint32(binary.BigEndian.Uint16(q[6:8])), reply: ReplyUnreachable, lost: true}, true
		}
	}
	return rawKey{}, rawEvent{}, false
}

// parseICMP6Target is parseICMPTarget for ICMPv6, whose raw sockets
// deliver the message without the IPv6 header: from is its source. Only
// answers are parsed (transmit stamps come by OPT_ID).
func parseICMP6Target(m []byte, from netip.Addr) (rawKey, rawEvent, bool) {
	if len(m) < 8 {
		return rawKey{}, rawEvent{}, false
	}
	switch m[0] {
	case 129: // echo reply
		return rawKey{remote: from, a: binary.BigEndian.Uint16(m[4:6])},
			rawEvent{seq: uint32(binary.BigEndian.Uint16(m[6:8])), reply: ReplyEcho}, true
	case 1: // destination unreachable quoting the IPv6 header and our echo request
		q := m[8:]
		if len(q) >= 40+8 && q[0]>>4 == 6 && q[6] == 58 && q[40] == 128 {
			return rawKey{remote: netip.AddrFrom16([16]byte(q[24:40])), a: binary.BigEndian.Uint16(q[44:46])},
				rawEvent{seq: uint32(binary.BigEndian.Uint16(q[46:48])), reply: ReplyUnreachable, lost: true}, true
		}
	}
	return rawKey{}, rawEvent{}, false
}
