package lab

import (
	"net"
	"testing"
	"time"
)

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
// delay: UDP round trips host1→host2 with and without 10 ms on host1's
// uplink; reports the error of the added delay at p50 and p99 (added −
// configured, from the RTT distributions) and the element's own send
// lateness.
func BenchmarkDelayElement(b *testing.B) {
	f := New(b, Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	echo(b, f, "host2", 7)
	dst := &net.UDPAddr{IP: f.Host("host2").Addr.AsSlice(), Port: 7}
	const d = 10 * time.Millisecond
	n := max(b.N, 200)
	b.ResetTimer()
	base := rtts(b, f, "host1", dst, 40000, n)
	l := f.LinkBetween("host1", "leaf1")
	if err := f.SetDelay(l, "host1", d); err != nil {
		b.Fatal(err)
	}
	got := rtts(b, f, "host1", dst, 40001, n)
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
