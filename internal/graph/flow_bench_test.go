package graph

import (
	"testing"
	"time"
	"unsafe"
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

// sampleRing is the per-key state this package kept before flow.go: the
// last n samples of one key, summarised by sorting them. It stays here as
// the baseline of BenchmarkFlowState.
type sampleRing struct {
	buf  []Sample
	next int
	size int
}

func (r *sampleRing) add(s Sample) {
	if len(r.buf) < r.size {
		r.buf = append(r.buf, s)
		return
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % r.size
}

func (r *sampleRing) ordered(dst []Sample) []Sample {
	if len(r.buf) < r.size {
		return append(dst, r.buf...)
	}
	dst = append(dst, r.buf[r.next:]...)
	return append(dst, r.buf[:r.next]...)
}

// ringRoute is a route's metrics the old way: every key's ring
// concatenated and summarised, then each key's ring again for its p50 and
// p10 (the baselines).
func ringRoute(rings []*sampleRing) (Metrics, float64) {
	var all []Sample
	for _, r := range rings {
		all = r.ordered(all)
	}
	m := ComputeMetrics(all)
	low := 0.0
	var buf []Sample
	for _, r := range rings {
		buf = r.ordered(buf[:0])
		km, p10 := computeMetrics(buf)
		low += km.RTTP50 - p10
	}
	return m, low
}

// BenchmarkFlowState compares a route's per-key state before (a
// 100-sample ring per key, sorted on every update) and now (flow.go's
// buckets and sketches), in the same run. A route has 4 keys pinged in
// turns, all windows full; an "update" is what an agent does per route
// per coalescing interval: 4 samples in (one per key), then the route's
// metrics with every key's p50 and p10. Reported: ns per update and bytes
// of state per key, old, new, and old/new. Run:
//
//	go test -run '^$' -bench FlowState -benchtime 20000x ./internal/graph
func BenchmarkFlowState(b *testing.B) {
	const keys, n = 4, 100
	t0 := time.Unix(1_800_000_000, 0)
	sample := func(i int) Sample {
		s := Sample{Seq: uint64(i), Sent: t0.Add(time.Duration(i) * 250 * time.Millisecond),
			RTT: time.Duration(40_000 + (i*7919)%17_000), Source: "ebpf"}
		if i%50 == 3 {
			s.Lost, s.Dir, s.RTT = true, LossForward, 0
		}
		return s
	}
	rings := make([]*sampleRing, keys)
	for i := range rings {
		rings[i] = &sampleRing{size: n}
	}
	w := newFlowWindow(n)
	flows := make([]*flowState, keys)
	for i := range flows {
		flows[i] = newFlowState()
	}
	// Fill both: the old rings hold n samples per key (their windows were
	// per key), the new state its route window and more.
	for i := range keys * n {
		rings[i%keys].add(sample(i))
		w.add(flows[i%keys], sample(i))
	}
	var ringNs, flowNs time.Duration
	i := keys * n
	for b.Loop() {
		start := time.Now()
		for k := range keys {
			rings[k].add(sample(i + k))
		}
		if m, _ := ringRoute(rings); m.Samples != keys*n {
			b.Fatal(m.Samples)
		}
		mid := time.Now()
		for k := range keys {
			w.add(flows[k], sample(i+k))
		}
		if m, parts := w.summarize(flows); m.Samples < n || parts[0].p10 == 0 {
			b.Fatal(m.Samples)
		}
		end := time.Now()
		ringNs += mid.Sub(start)
		flowNs += end.Sub(mid)
		i += keys
	}
	ringKey := int(unsafe.Sizeof(sampleRing{})) + cap(rings[0].buf)*int(unsafe.Sizeof(Sample{}))
	flowKey := int(unsafe.Sizeof(flowState{})) + cap(flows[0].ring)*int(unsafe.Sizeof(flowBucket{}))
	b.ReportMetric(float64(ringNs.Nanoseconds())/float64(b.N), "ring-ns/update")
	b.ReportMetric(float64(flowNs.Nanoseconds())/float64(b.N), "flow-ns/update")
	b.ReportMetric(float64(ringNs)/float64(flowNs), "ring/flow-time")
	b.ReportMetric(float64(ringKey), "ring-B/key")
	b.ReportMetric(float64(flowKey), "flow-B/key")
	b.ReportMetric(float64(ringKey)/float64(flowKey), "ring/flow-bytes")
}
