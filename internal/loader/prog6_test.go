package loader

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/dnms/dnms/internal/probe"
)

var (
	addrA6   = netip.MustParseAddr("fd00:dead::1")
	addrB6   = netip.MustParseAddr("fd00:dead::2")
	router6  = netip.MustParseAddr("fd00:dead::99")
	ip6Len   = 40
	payload6 = ethLen + 40 + udpLen
)

// pkt6 is one crafted IPv6 packet (UDP unless next is set).
type pkt6 struct {
	srcMAC, dstMAC [6]byte
	src, dst       netip.Addr
	hop            uint8
	next           uint8
	sport, dport   uint16
	payload        []byte
}

func sum6(src, dst netip.Addr, proto uint8, seg []byte) uint32 {
	s, d := src.As16(), dst.As16()
	acc := sum16(s[:], 0)
	acc = sum16(d[:], acc)
	acc += uint32(len(seg)) + uint32(proto)
	return sum16(seg, acc)
}

func (p pkt6) bytes() []byte {
	next := p.next
	if next == 0 {
		next = 17
	}
	l4 := p.payload
	if next == 17 {
		l4 = make([]byte, udpLen+len(p.payload))
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], p.payload)
		c := csumFold(sum6(p.src, p.dst, 17, l4))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	b := make([]byte, ethLen+ip6Len+len(l4))
	copy(b[0:], p.dstMAC[:])
	copy(b[6:], p.srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x86dd)
	ip := b[ethLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	ip[6] = next
	ip[7] = p.hop
	s, d := p.src.As16(), p.dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	copy(b[ethLen+ip6Len:], l4)
	return b
}

func ping6Frame(h dnmsHdr) pkt6 {
	return pkt6{srcMAC: macA, dstMAC: macB, src: addrA6, dst: addrB6, hop: 61, sport: 40001, dport: 33435,
		payload: h.payload()}
}

// icmp6Error wraps the probe's IPv6 packet into an ICMPv6 error from router.
func icmp6Error(probeFrame []byte, icmpType, code uint8) []byte {
	inner := probeFrame[ethLen:]
	icmp := make([]byte, 8+len(inner))
	icmp[0], icmp[1] = icmpType, code
	copy(icmp[8:], inner)
	dst := netip.AddrFrom16([16]byte(probeFrame[ethLen+8 : ethLen+24]))
	binary.BigEndian.PutUint16(icmp[2:], csumFold(sum6(router6, dst, 58, icmp)))
	return pkt6{srcMAC: macR, dstMAC: [6]byte(probeFrame[6:12]), src: router6, dst: dst, hop: 64, next: 58,
		payload: icmp}.bytes()
}

func TestIPv6(t *testing.T) {
	objs, rd := testObjs(t, DefaultConfig())
	if err := objs.LocalV6.Put(bpfAddr6{A: addrB6.As16()}, uint8(1)); err != nil {
		t.Fatal(err)
	}

	t.Run("reflect", func(t *testing.T) {
		h := ping(3)
		h.Flags = flagHMAC
		h.HMAC = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
		in := ping6Frame(h).bytes()
		ret, out := run(t, objs.DnmsIngress, in)
		if ret != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", ret)
		}
		out = out[:len(in)]
		if !bytes.Equal(out[0:6], macA[:]) || !bytes.Equal(out[6:12], macB[:]) {
			t.Errorf("macs not swapped")
		}
		ip := out[ethLen:]
		src, dst := netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		if src != addrB6 || dst != addrA6 || ip[7] != 64 {
			t.Errorf("ip %v → %v hop %d, want %v → %v hop 64", src, dst, ip[7], addrB6, addrA6)
		}
		if csumFold(sum6(src, dst, 17, ip[ip6Len:])) != 0 {
			t.Errorf("bad UDP checksum")
		}
		got := parseHdr(out[payload6:])
		if got.Type != typeAck || got.Flags != flagHMAC|flagKernel || got.RxCount != 1 || got.T2 == 0 || got.T3 < got.T2 {
			t.Errorf("ack %+v", got)
		}
		var p probe.Packet
		if r := probe.Decode(in[payload6:], &p); r != probe.RejectNone {
			t.Fatal(r)
		}
		probe.Reflect(&p, int64(got.T2), int64(got.T3), got.RxCount, got.AckCount)
		p.Flags |= probe.FlagKernel
		if user := probe.AppendEncode(nil, &p); !bytes.Equal(user, out[payload6:]) {
			t.Errorf("kernel and userspace acks differ\nkernel % x\nuser   % x", out[payload6:], user)
		}
	})

	notUs := ping6Frame(ping(1))
	notUs.dst = netip.MustParseAddr("fd00:dead::77")
	hopByHop := ping6Frame(ping(1))
	hopByHop.next = 0 // hop-by-hop options header: not parsed, passes
	hopByHop.payload = append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, hopByHop.payload...)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"ping not to us", notUs.bytes()},
		{"extension header", hopByHop.bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ret, out := run(t, objs.DnmsIngress, tc.in)
			if ret != tcActOK || !bytes.Equal(out[:len(tc.in)], tc.in) {
				t.Errorf("verdict %d, altered %v", ret, !bytes.Equal(out[:len(tc.in)], tc.in))
			}
		})
	}
	readStamps(t, rd)

	local := netip.AddrPortFrom(addrA6, 40001)
	trace := ping(21)
	trace.Type, trace.TTL, trace.PadLen = typeTrace, 2, 2
	traceFrame := ping6Frame(trace).bytes()
	ack := ping(22)
	ack.Type = typeAck
	ackFrame := pkt6{srcMAC: macB, dstMAC: macA, src: addrB6, dst: addrA6, hop: 60, sport: 40001, dport: 33435,
		payload: ack.payload()}.bytes()
	for _, tc := range []struct {
		name string
		prog *ebpf.Program
		in   []byte
		want probe.Stamp
	}{
		{"egress trace", objs.DnmsEgress, traceFrame,
			probe.Stamp{Kind: probe.StampTx, Local: local, Remote: addrB6, Type: typeTrace, Seq: 21, Epoch: testEpoch, TTL: 2}},
		{"ingress ack", objs.DnmsIngress, ackFrame,
			probe.Stamp{Kind: probe.StampRxAck, Local: local, Remote: addrB6, Type: typeAck, Seq: 22, Epoch: testEpoch}},
		{"time exceeded", objs.DnmsIngress, icmp6Error(traceFrame, 3, 0),
			probe.Stamp{Kind: probe.StampRxICMP, Local: local, Remote: addrB6, Router: router6, ICMPType: 3,
				Type: typeTrace, Seq: 21, Epoch: testEpoch, TTL: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ret, out := run(t, tc.prog, tc.in)
			if ret != tcActOK || !bytes.Equal(out[:len(tc.in)], tc.in) {
				t.Fatalf("verdict %d, altered", ret)
			}
			st := readStamps(t, rd)
			if len(st) != 1 {
				t.Fatalf("%d stamps: %+v", len(st), st)
			}
			got := st[0]
			got.Time = 0
			if got != tc.want {
				t.Errorf("stamp\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
