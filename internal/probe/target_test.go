package probe

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func newTestProber(t *testing.T, ts string) *TargetProber {
	t.Helper()
	cfg := DefaultTargetConfig()
	cfg.Timestamps = ts
	p, err := NewTargetProber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func probeOnce(t *testing.T, p *TargetProber, kind TargetKind, dst netip.AddrPort) TargetResult {
	t.Helper()
	f, err := p.Open(kind, dst, 0)
	if err != nil {
		t.Fatalf("open %s %s: %v", kind, dst, err)
	}
	defer f.Close()
	var r TargetResult
	for range 3 { // a second probe proves sequence handling too
		r = f.Probe(context.Background(), time.Second)
	}
	return r
}

// TestTargetUDPLoopback: an answering UDP responder and a closed port both
// count as reachable; unprivileged.
func TestTargetUDPLoopback(t *testing.T) {
	for _, ts := range []string{"auto", "user"} {
		t.Run(ts, func(t *testing.T) {
			p := newTestProber(t, ts)
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go func() {
				b := make([]byte, 64)
				for {
					n, from, err := c.ReadFromUDP(b)
					if err != nil {
						return
					}
					c.WriteToUDP(b[:n], from)
				}
			}()
			open := c.LocalAddr().(*net.UDPAddr).AddrPort()
			r := probeOnce(t, p, KindUDP, open)
			if r.Lost || r.Reply != ReplyAnswer || r.RTT <= 0 || r.RTT > 500*time.Millisecond {
				t.Fatalf("open port: %+v", r)
			}
			if ts == "user" && r.Source != SourceUser {
				t.Fatalf("source %s with -timestamps user", r.Source)
			}
			// The root namespace's loopback is shared with every other
			// process (a qdisc or TC program there may stamp skbs on
			// another clock, and then the sample falls back to user):
			// the lab tests, in namespaces of their own, require kernel.
			if ts == "auto" && r.Source != SourceKernel && r.Source != SourceUser {
				t.Errorf("source %q", r.Source)
			}
			closed := netip.AddrPortFrom(open.Addr(), freeUDPPort(t))
			r = probeOnce(t, p, KindUDP, closed)
			if r.Lost || r.Reply != ReplyPortUnreachable {
				t.Fatalf("closed port: %+v", r)
			}
		})
	}
}

func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
}

// TestTargetRawLoopback: icmp echo and tcp SYN to an open and a closed port
// on loopback (raw sockets: root).
func TestTargetRawLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: raw sockets")
	}
	for _, lo := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")} {
		t.Run(lo.String(), func(t *testing.T) {
			p := newTestProber(t, "auto")
			r := probeOnce(t, p, KindICMP, netip.AddrPortFrom(lo, 0))
			if r.Lost || r.Reply != ReplyEcho {
				t.Fatalf("icmp: %+v", r)
			}
			network := "tcp4"
			if lo.Is6() {
				network = "tcp6"
			}
			ln, err := net.Listen(network, netip.AddrPortFrom(lo, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			open := ln.Addr().(*net.TCPAddr).AddrPort()
			r = probeOnce(t, p, KindTCP, open)
			if r.Lost || r.Reply != ReplySynAck {
				t.Fatalf("tcp open: %+v", r)
			}
			ln2, _ := net.Listen(network, netip.AddrPortFrom(lo, 0).String())
			closed := ln2.Addr().(*net.TCPAddr).AddrPort()
			ln2.Close()
			r = probeOnce(t, p, KindTCP, closed)
			if r.Lost || r.Reply != ReplyRST {
				t.Fatalf("tcp closed: %+v", r)
			}
		})
	}
}

func TestTargetPacketParsers(t *testing.T) {
	src, dst := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddrPort("198.18.0.2:80")
	ip := func(proto byte, s, d netip.Addr, l4 []byte) []byte {
		b := make([]byte, 20, 20+len(l4))
		b[0], b[9] = 0x45, proto
		s4, d4 := s.As4(), d.As4()
		copy(b[12:], s4[:])
		copy(b[16:], d4[:])
		return append(b, l4...)
	}
	syn := buildSYN(src, dst, 40000, 1000)
	if inetChecksum(pseudoSum(src, dst.Addr(), len(syn)), syn) != 0 {
		t.Fatal("SYN checksum does not verify")
	}
	k, ev, ok := parseTCPTarget(ip(6, src, dst.Addr(), syn), true)
	if !ok || !ev.tx || ev.seq != 1000 || k != (rawKey{remote: dst.Addr(), a: 80, b: 40000}) {
		t.Fatalf("tx SYN: %v %+v %v", k, ev, ok)
	}
	synack := make([]byte, 20)
	binary.BigEndian.PutUint16(synack[0:], 80)
	binary.BigEndian.PutUint16(synack[2:], 40000)
	binary.BigEndian.PutUint32(synack[8:], 1001)
	synack[13] = 0x12
	k, ev, ok = parseTCPTarget(ip(6, dst.Addr(), src, synack), false)
	if !ok || ev.reply != ReplySynAck || ev.seq != 1000 || k != (rawKey{remote: dst.Addr(), a: 80, b: 40000}) {
		t.Fatalf("SYN-ACK: %v %+v %v", k, ev, ok)
	}
	synack[13] = 0x14 // RST+ACK
	if _, ev, _ = parseTCPTarget(ip(6, dst.Addr(), src, synack), false); ev.reply != ReplyRST {
		t.Fatalf("RST: %+v", ev)
	}
	echo := buildEcho(7, 9, false)
	if inetChecksum(0, echo) != 0 {
		t.Fatal("echo checksum does not verify")
	}
	reply := append([]byte{}, echo...)
	reply[0] = 0
	if k, ev, ok = parseICMPTarget(ip(1, dst.Addr(), src, reply), false); !ok || ev.seq != 9 || k.a != 7 || ev.reply != ReplyEcho {
		t.Fatalf("echo reply: %v %+v %v", k, ev, ok)
	}
	unreach := append([]byte{3, 1, 0, 0, 0, 0, 0, 0}, ip(1, src, dst.Addr(), echo)...)
	if k, ev, ok = parseICMPTarget(ip(1, dst.Addr(), src, unreach), false); !ok || !ev.lost || k.remote != dst.Addr() {
		t.Fatalf("unreachable: %v %+v %v", k, ev, ok)
	}
	// IPv6 raw sockets deliver no IP header: the source comes from recvmsg.
	v6 := netip.MustParseAddr("fd00::2")
	reply6 := buildEcho(7, 9, true)
	reply6[0] = 129
	if k, ev, ok = parseICMP6Target(reply6, v6); !ok || k != (rawKey{remote: v6, a: 7}) || ev.seq != 9 || ev.reply != ReplyEcho {
		t.Fatalf("echo reply v6: %v %+v %v", k, ev, ok)
	}
	synack[13] = 0x12
	if k, ev, ok = parseTCP6Target(synack, v6); !ok || k != (rawKey{remote: v6, a: 80, b: 40000}) || ev.reply != ReplySynAck {
		t.Fatalf("SYN-ACK v6: %v %+v %v", k, ev, ok)
	}
	syn6 := buildSYN(netip.MustParseAddr("fd00::1"), netip.AddrPortFrom(v6, 80), 40000, 1000)
	if inetChecksum(pseudoSum(netip.MustParseAddr("fd00::1"), v6, len(syn6)), syn6) != 0 {
		t.Fatal("IPv6 SYN checksum does not verify")
	}
	for _, b := range [][]byte{nil, {0x45}, ip(6, src, src, []byte{1, 2}), ip(1, src, src, []byte{3, 0, 0, 0, 0, 0, 0, 0, 0x45})} {
		parseICMPTarget(b, false)
		parseTCPTarget(b, false)
	}
}

func FuzzTargetParsers(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 7, 0, 9}, false)
	f.Fuzz(func(t *testing.T, b []byte, tx bool) {
		parseICMPTarget(b, tx)
		parseTCPTarget(b, tx)
		parseICMP6Target(b, netip.MustParseAddr("fd00::1"))
		parseTCP6Target(b, netip.MustParseAddr("fd00::1"))
	})
}

// TestTargetUDPContext: a probe waiting on a silent target ends with its
// context, not its timeout (a reload must not wait for every timeout).
func TestTargetUDPContext(t *testing.T) {
	p := newTestProber(t, "auto")
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	f, err := p.Open(KindUDP, silent.LocalAddr().(*net.UDPAddr).AddrPort(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	r := f.Probe(ctx, 10*time.Second)
	if took := time.Since(start); !r.Lost || took > 5*time.Second {
		t.Fatalf("probe ended after %v (%+v); want lost soon after cancel", took, r)
	}
}
