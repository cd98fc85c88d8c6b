package loader

import (
	"encoding/binary"
	"net/netip"
)

// Test-only packet crafting: Ethernet + IPv4 + UDP + dnms header, laid out as
// internal/probe/doc.go says, so that the BPF programs can be run on exact
// bytes and their output checked field by field.

const (
	ethLen     = 14
	ipLen      = 20
	udpLen     = 8
	payloadOff = ethLen + ipLen + udpLen
	hdrLen     = 64
	hmacLen    = 16

	typePing     = 1
	typeAck      = 2
	typeTrace    = 3
	typeTraceAck = 4
	flagHMAC     = 1
	flagKernel   = 2
)

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0xa}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0xb}
)

// dnmsHdr is the test's view of the wire header.
type dnmsHdr struct {
	Magic                uint32
	Version, Type, Flags uint8
	TTL                  uint8
	SrcPort, PadLen      uint16
	Epoch                uint32
	Seq, T1, T2, T3      uint64
	RxCount, AckCount    uint64
	HMAC                 [16]byte
}

func (h dnmsHdr) payload() []byte {
	n := hdrLen + int(h.PadLen)
	if h.Flags&flagHMAC != 0 {
		n += hmacLen
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b[0:], h.Magic)
	b[4], b[5], b[6], b[7] = h.Version, h.Type, h.Flags, h.TTL
	binary.BigEndian.PutUint16(b[8:], h.SrcPort)
	binary.BigEndian.PutUint16(b[10:], h.PadLen)
	binary.BigEndian.PutUint32(b[12:], h.Epoch)
	for i, v := range []uint64{h.Seq, h.T1, h.T2, h.T3, h.RxCount, h.AckCount} {
		binary.BigEndian.PutUint64(b[16+8*i:], v)
	}
	if h.Flags&flagHMAC != 0 {
		copy(b[64:], h.HMAC[:])
	}
	return b
}

func parseHdr(b []byte) dnmsHdr {
	var h dnmsHdr
	h.Magic = binary.BigEndian.Uint32(b[0:])
	h.Version, h.Type, h.Flags, h.TTL = b[4], b[5], b[6], b[7]
	h.SrcPort = binary.BigEndian.Uint16(b[8:])
	h.PadLen = binary.BigEndian.Uint16(b[10:])
	h.Epoch = binary.BigEndian.Uint32(b[12:])
	vs := []*uint64{&h.Seq, &h.T1, &h.T2, &h.T3, &h.RxCount, &h.AckCount}
	for i, v := range vs {
		*v = binary.BigEndian.Uint64(b[16+8*i:])
	}
	if h.Flags&flagHMAC != 0 && len(b) >= 80 {
		copy(h.HMAC[:], b[64:80])
	}
	return h
}

// pkt describes one crafted IPv4 packet.
type pkt struct {
	srcMAC, dstMAC [6]byte
	src, dst       netip.Addr
	ttl            uint8
	proto          uint8 // 17 UDP unless set
	sport, dport   uint16
	payload        []byte
	noUDPCsum      bool
	ipOptions      []byte
	fragOff        uint16 // raw frag_off field (flags + offset)
}

func (p pkt) bytes() []byte {
	proto := p.proto
	if proto == 0 {
		proto = 17
	}
	ihl := ipLen + len(p.ipOptions)
	l4 := p.payload
	if proto == 17 {
		l4 = make([]byte, udpLen+len(p.payload))
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], p.payload)
		if !p.noUDPCsum {
			binary.BigEndian.PutUint16(l4[6:], udpChecksum(p.src, p.dst, l4))
		}
	}
	b := make([]byte, ethLen+ihl+len(l4))
	copy(b[0:], p.dstMAC[:])
	copy(b[6:], p.srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[ethLen : ethLen+ihl]
	ip[0] = 0x40 | uint8(ihl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], p.fragOff)
	ip[8] = p.ttl
	ip[9] = proto
	s4, d4 := p.src.As4(), p.dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	copy(ip[20:], p.ipOptions)
	binary.BigEndian.PutUint16(ip[10:], csumFold(sum16(ip, 0)))
	copy(b[ethLen+ihl:], l4)
	return b
}

func sum16(b []byte, acc uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

func csumFold(acc uint32) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// udpChecksum computes the UDP checksum over the pseudo header and seg
// (whose checksum field must be zero or is included as is).
func udpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	s4, d4 := src.As4(), dst.As4()
	acc := sum16(s4[:], 0)
	acc = sum16(d4[:], acc)
	acc += 17 + uint32(len(seg))
	c := csumFold(sum16(seg, acc))
	if c == 0 {
		c = 0xffff
	}
	return c
}

// validUDP reports whether the UDP checksum of the IPv4 packet frame is right.
func validUDP(frame []byte) bool {
	ip := frame[ethLen:]
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	seg := ip[ipLen:]
	acc := sum16(src.AsSlice(), 0)
	acc = sum16(dst.AsSlice(), acc)
	acc += 17 + uint32(len(seg))
	return csumFold(sum16(seg, acc)) == 0
}

func validIP(frame []byte) bool {
	return csumFold(sum16(frame[ethLen:ethLen+ipLen], 0)) == 0
}

// icmpError wraps the first quoteLen bytes of the IP packet inside frame
// (a probe we sent) into an ICMP error from router to the probe's source.
func icmpError(router [6]byte, routerAddr netip.Addr, probeFrame []byte, icmpType, code uint8, quoteLen int) []byte {
	inner := probeFrame[ethLen:]
	if quoteLen < len(inner) {
		inner = inner[:quoteLen]
	}
	icmp := make([]byte, 8+len(inner))
	icmp[0], icmp[1] = icmpType, code
	copy(icmp[8:], inner)
	binary.BigEndian.PutUint16(icmp[2:], csumFold(sum16(icmp, 0)))
	dst := netip.AddrFrom4([4]byte(probeFrame[ethLen+12 : ethLen+16]))
	return pkt{srcMAC: router, dstMAC: [6]byte(probeFrame[6:12]), src: routerAddr, dst: dst,
		ttl: 64, proto: 1, payload: icmp}.bytes()
}
