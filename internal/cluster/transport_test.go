package cluster

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func testTransport(t testing.TB) *transport {
	t.Helper()
	tr, err := newTransport(loopback, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	return tr
}

func recvPacket(t testing.TB, ch <-chan *memberlist.Packet) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet within 5 s")
		return nil
	}
}

// TestTransportPackets: every packet reaches memberlist whole, from its
// sender, in a slice of its own exact size (memberlist may keep it while
// the next packets are read); sends take ip:port and host:port; streams
// are plain TCP.
func TestTransportPackets(t *testing.T) {
	a, b := testTransport(t), testTransport(t)
	bAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port()))
	var kept []*memberlist.Packet
	for _, size := range []int{1, 300, 1400, 65507} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if _, err := a.WriteTo(msg, bAddr); err != nil {
			t.Fatalf("send %d bytes: %v", size, err)
		}
		p := recvPacket(t, b.PacketCh())
		if !bytes.Equal(p.Buf, msg) || cap(p.Buf) != size {
			t.Fatalf("%d bytes sent: got %d bytes (cap %d)", size, len(p.Buf), cap(p.Buf))
		}
		if got := p.From.(*net.UDPAddr).AddrPort(); got != netip.AddrPortFrom(loopback, uint16(a.port())) {
			t.Fatalf("from %v, want %v:%d", got, loopback, a.port())
		}
		if p.Timestamp.IsZero() {
			t.Fatal("no receive timestamp")
		}
		kept = append(kept, p)
	}
	for _, p := range kept {
		if p.Buf[0] != byte(len(p.Buf)) || p.Buf[len(p.Buf)-1] != byte(len(p.Buf)) {
			t.Fatalf("a kept %d-byte packet was overwritten by a later read", len(p.Buf))
		}
	}
	if _, err := a.WriteToAddress([]byte("by name"), memberlist.Address{Addr: net.JoinHostPort("localhost", strconv.Itoa(b.port())), Name: "b"}); err != nil {
		t.Fatal(err)
	}
	if p := recvPacket(t, b.PacketCh()); string(p.Buf) != "by name" {
		t.Fatalf("got %q", p.Buf)
	}
	ip, port, err := a.FinalAdvertiseAddr("198.18.0.1", 7946)
	if err != nil || !ip.Equal(net.IPv4(198, 18, 0, 1)) || len(ip) != 4 || port != 7946 {
		t.Fatalf("advertise %v:%d %v", ip, port, err)
	}
	if _, _, err := a.FinalAdvertiseAddr("nope", 1); err == nil {
		t.Fatal("a bad advertise address was accepted")
	}

	conn, err := a.DialTimeout(bAddr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case in := <-b.StreamCh():
		in.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no stream within 5 s")
	}
	done := make(chan struct{})
	go func() { b.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not return")
	}
}

// TestTransportReadAllocs: a read allocates about the packet, not
// NetTransport's 64 KiB buffer.
func TestTransportReadAllocs(t *testing.T) {
	a, b := testTransport(t), testTransport(t)
	const packets, size = 200, 300
	msg := make([]byte, size)
	to := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port()))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range packets {
		if _, err := a.WriteTo(msg, to); err != nil {
			t.Fatal(err)
		}
		recvPacket(t, b.PacketCh())
	}
	runtime.ReadMemStats(&after)
	// A 300-byte copy, the Packet and its address: well under 4 KiB even
	// with -race; NetTransport allocates over 64 KiB per packet.
	if per := (after.TotalAlloc - before.TotalAlloc) / packets; per > 4<<10 {
		t.Fatalf("%d bytes allocated per %d-byte packet, want ≤ 4 KiB", per, size)
	}
}

// BenchmarkTransportReceive sends one 300-byte gossip-sized packet and takes
// it from the receiving transport's PacketCh: memberlist's NetTransport
// (the baseline) against this package's transport. Compare B/op and
// allocs/op of the two in the same run.
func BenchmarkTransportReceive(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		make func(b *testing.B) (memberlist.Transport, int)
	}{
		{"memberlist", func(b *testing.B) (memberlist.Transport, int) {
			nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, Logger: newMemberlistLogger(quiet)})
			if err != nil {
				b.Fatal(err)
			}
			return nt, nt.GetAutoBindPort()
		}},
		{"dnms", func(b *testing.B) (memberlist.Transport, int) {
			tr := testTransport(b)
			return tr, tr.port()
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			send := testTransport(b)
			recv, port := tc.make(b)
			defer recv.Shutdown()
			to := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			msg := make([]byte, 300)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := send.WriteTo(msg, to); err != nil {
					b.Fatal(err)
				}
				recvPacket(b, recv.PacketCh())
			}
		})
	}
}
