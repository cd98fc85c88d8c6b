package lab

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// pingRTTs sends n ICMP echo requests (id) from host to dst one at a time
// and returns the round trips, measured from just before sendto to the
// kernel's receive timestamp of the reply.
func pingRTTs(tb testing.TB, f *Fabric, host string, dst netip.Addr, id uint16, n int) []time.Duration {
	tb.Helper()
	var fd int
	err := f.Do(host, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
	if err != nil {
		tb.Fatalf("icmp socket: %v", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	var out []time.Duration
	buf := make([]byte, 1500)
	oob := make([]byte, 128)
	for seq := 0; seq < n; seq++ {
		msg, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(id), Seq: seq, Data: make([]byte, 16)}}).Marshal(nil)
		start := time.Now()
		if err := unix.Sendto(fd, msg, 0, to); err != nil {
			tb.Fatalf("ping send: %v", err)
		}
		for {
			m, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				break // timeout: lost
			}
			ihl := int(buf[0]&0x0f) * 4
			if m < ihl+8 || buf[ihl] != 0 || binary.BigEndian.Uint16(buf[ihl+4:]) != id || binary.BigEndian.Uint16(buf[ihl+6:]) != uint16(seq) {
				continue
			}
			if ts, ok := rxStamp(oob[:oobn]); ok {
				out = append(out, ts.Sub(start))
			} else {
				out = append(out, time.Since(start))
			}
			break
		}
	}
	return out
}

// BenchmarkBuild measures building and tearing down the demo fabric
// (2 spines, 3 leaves, 2 hosts per leaf: 11 namespaces, 12 links).
func BenchmarkBuild(b *testing.B) {
	RequireRoot(b)
	for i := 0; i < b.N; i++ {
		f, err := Build(Config{Prefix: UniquePrefix(b), Spines: 2, Leaves: 3, HostsPerLeaf: 2})
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDelayElement measures how precisely the delay element adds its
// delay: ICMP echo round trips host1→host2 (answered by host2's kernel,
// received with kernel timestamps, so little userspace noise) with and
// without 10 ms on host1's uplink. It reports the error of the added delay
// at p50 and p99 (RTT percentile with delay − without − 10 ms) and the
// element's own send lateness.
func BenchmarkDelayElement(b *testing.B) {
	f := New(b, Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	const d = 10 * time.Millisecond
	n := max(b.N, 200)
	b.ResetTimer()
	h2 := f.Host("host2").Addr
	base := pingRTTs(b, f, "host1", h2, 1, n)
	l := f.LinkBetween("host1", "leaf1")
	if err := f.SetDelay(l, "host1", d); err != nil {
		b.Fatal(err)
	}
	got := pingRTTs(b, f, "host1", h2, 2, n)
	st := f.DelayStats(l, "host1")
	b.StopTimer()
	if len(base) == 0 || len(got) == 0 {
		b.Fatal("no answers")
	}
	b.ReportMetric(float64(pct(got, 50)-pct(base, 50)-d)/1e3, "p50err-µs")
	b.ReportMetric(float64(pct(got, 99)-pct(base, 99)-d)/1e3, "p99err-µs")
	b.ReportMetric(float64(st.LateP50)/1e3, "late-p50-µs")
	b.ReportMetric(float64(st.LateP99)/1e3, "late-p99-µs")
	b.ReportMetric(float64(len(base)-len(got)), "lost")
}
