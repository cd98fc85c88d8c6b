package graph

import (
	"testing"
	"time"
)

// BenchmarkRouteMetrics is what one coalesced route update costs an agent:
// the metrics of a route with 4 keys and full 100-sample rings (400
// samples sorted by send time, RTT percentiles, jitter), against a
// baseline that only adds the samples up as counters would. At the
// default 1 update per route per second, an agent with R routes spends
// R × the first figure per second (R ≈ 270 at -pingPeers 64 on a 3-tier
// Clos). Run:
//
//	go test -run '^$' -bench RouteMetrics -benchmem ./internal/graph
func BenchmarkRouteMetrics(b *testing.B) {
	t0 := time.Unix(1_800_000_000, 0)
	samples := make([]Sample, 0, 400)
	for k := range 4 {
		for i := range 100 {
			s := Sample{Seq: uint64(i), Sent: t0.Add(time.Duration(i*4+k) * 250 * time.Millisecond),
				RTT: time.Duration(40+(i*7+k*13)%17) * time.Microsecond, Source: TimeSource("ebpf")}
			if i%50 == k {
				s.Lost, s.RTT = true, 0
			}
			samples = append(samples, s)
		}
	}
	b.Run("ring-percentiles", func(b *testing.B) {
		for b.Loop() {
			m, _ := computeMetrics(samples)
			if m.Samples != 400 {
				b.Fatal(m.Samples)
			}
		}
	})
	b.Run("counters-baseline", func(b *testing.B) {
		for b.Loop() {
			var n, lost int
			var sum time.Duration
			for _, s := range samples {
				n++
				if s.Lost {
					lost++
				}
				sum += s.RTT
			}
			if n != 400 || lost == 0 || sum == 0 {
				b.Fatal(n, lost)
			}
		}
	})
}
