package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"
)

// echo answers every UDP datagram on host:port with the same bytes.
func echo(t testing.TB, f *Fabric, host string, port uint16) {
	t.Helper()
	var c net.PacketConn
	err := f.Do(host, func() error {
		var err error
		c, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("echo on %s: %v", host, err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
}

// rtts measures n UDP round trips from host:sport to the echo at dst:port,
// one at a time; lost probes are skipped.
func rtts(t testing.TB, f *Fabric, host string, dst *net.UDPAddr, sport uint16, n int) []time.Duration {
	t.Helper()
	var c net.PacketConn
	err := f.Do(host, func() error {
		var err error
		c, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", sport))
		return err
	})
	if err != nil {
		t.Fatalf("rtt socket on %s: %v", host, err)
	}
	defer c.Close()
	var out []time.Duration
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		var msg [8]byte
		binary.BigEndian.PutUint64(msg[:], uint64(i))
		start := time.Now()
		if _, err := c.WriteTo(msg[:], dst); err != nil {
			t.Fatalf("rtt send: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			m, _, err := c.ReadFrom(buf)
			if err != nil {
				break // lost
			}
			if m == 8 && binary.BigEndian.Uint64(buf[:8]) == uint64(i) {
				out = append(out, time.Since(start))
				break
			}
		}
	}
	return out
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func TestDelay(t *testing.T) {
	f := New(t, Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	echo(t, f, "host2", 7)
	dst := &net.UDPAddr{IP: f.Host("host2").Addr.AsSlice(), Port: 7}
	const n = 40
	base := rtts(t, f, "host1", dst, 40000, n)
	if len(base) < n-2 {
		t.Fatalf("baseline: %d of %d answered", len(base), n)
	}
	b50 := pct(base, 50)
	const d = 20 * time.Millisecond
	for _, tc := range []struct{ a, b, from string }{
		{"host1", "leaf1", "host1"},   // receiver is a router: ingress tap
		{"host1", "leaf1", "leaf1"},   // receiver is a host: egress divert
		{"leaf2", "spine1", "spine1"}, // fabric link
		{"host2", "leaf2", "host2"},   // the reverse path
	} {
		t.Run(tc.from+"-to-"+map[bool]string{true: tc.b, false: tc.a}[tc.from == tc.a], func(t *testing.T) {
			l := f.LinkBetween(tc.a, tc.b)
			if err := f.SetDelay(l, tc.from, d); err != nil {
				t.Fatal(err)
			}
			got := rtts(t, f, "host1", dst, 40001, n)
			st := f.DelayStats(l, tc.from)
			if err := f.ClearFaults(l); err != nil {
				t.Fatal(err)
			}
			if len(got) < n-2 {
				t.Fatalf("with delay: %d of %d answered (stats %+v)", len(got), n, st)
			}
			added := pct(got, 50) - b50
			t.Logf("added delay p50 %v (min %v, p90 %v), element %+v", added, pct(got, 0)-pct(base, 0), pct(got, 90)-b50, st)
			// The element never sends early; on a loaded 2-core machine it
			// may send late, so the upper bound is generous.
			if pct(got, 0) < d || added > d+15*time.Millisecond {
				t.Fatalf("rtt p0 %v p50 %v (baseline p50 %v) with %v delay", pct(got, 0), pct(got, 50), b50, d)
			}
			after := rtts(t, f, "host1", dst, 40002, 10)
			if len(after) < 9 || pct(after, 50) > b50+d/2 {
				t.Fatalf("after ClearFaults: %d answers, p50 %v (baseline %v)", len(after), pct(after, 50), b50)
			}
		})
	}
}
