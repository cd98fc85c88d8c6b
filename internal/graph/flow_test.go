package graph

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// exactQuantile is the nearest-rank quantile of vs (sorted in place).
func exactQuantile(vs []float64, p float64) float64 {
	slices.Sort(vs)
	return percentile(vs, p)
}

// TestSketchQuantileError: on random RTT sets of many shapes and sizes,
// every quantile the sketch reads is within sketchRelErr (0.39%) of the
// exact nearest-rank quantile of a sort.
func TestSketchQuantileError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := map[string]func() time.Duration{
		"uniform-us":  func() time.Duration { return time.Duration(20_000 + rng.IntN(200_000)) },
		"lognormal":   func() time.Duration { return time.Duration(math.Exp(11 + 2*rng.NormFloat64())) },
		"bimodal":     func() time.Duration { return time.Duration(50_000 + rng.IntN(2)*5_000_000 + rng.IntN(3000)) },
		"tiny-ns":     func() time.Duration { return time.Duration(rng.IntN(600)) },
		"seconds":     func() time.Duration { return time.Duration(rng.Int64N(int64(30 * time.Second))) },
		"constant":    func() time.Duration { return 137 * time.Microsecond },
		"huge-clamps": func() time.Duration { return time.Duration(1<<41 + rng.Int64N(1<<20)) },
	}
	for name, draw := range shapes {
		for trial := range 60 {
			n := 1 + rng.IntN(400)
			h := getHistogram()
			exact := make([]float64, 0, n)
			lo, hi := math.Inf(1), math.Inf(-1)
			for i := 0; i < n; i += bucketCap {
				var sk rttSketch
				for j := i; j < min(i+bucketCap, n); j++ {
					d := draw()
					sk.add(rttBin(d))
					v := d.Seconds()
					exact = append(exact, v)
					lo, hi = min(lo, v), max(hi, v)
				}
				h.merge(&sk)
			}
			for _, p := range []float64{0, 0.01, 0.10, 0.25, 0.50, 0.90, 0.99, 1} {
				got, want := h.quantile(p, lo, hi), exactQuantile(exact, p)
				bound := sketchRelErr * want
				if name == "huge-clamps" && p > 0 && p < 1 {
					// Above 2^41 ns everything shares the top bin; only the
					// clamp to the exact extremes holds.
					bound = want
				}
				if math.Abs(got-want) > bound+1e-15 {
					t.Fatalf("%s trial %d (n=%d): p%.0f = %.9g, exact %.9g: error %.3g%% > %.3g%%",
						name, trial, n, p*100, got, want, 100*math.Abs(got-want)/want, 100*sketchRelErr)
				}
			}
			putHistogram(h)
		}
	}
}

// TestSketchBins: bins are ordered like their values, every value lies
// within sketchRelErr of its bin's representative, and the index range
// fits sketchBins.
func TestSketchBins(t *testing.T) {
	prev := uint16(0)
	for ns := int64(0); ns < 1<<42; ns = ns + 1 + ns/97 {
		b := rttBin(time.Duration(ns))
		if b < prev || int(b) >= sketchBins {
			t.Fatalf("rttBin(%d) = %d after %d (of %d bins)", ns, b, prev, sketchBins)
		}
		prev = b
		if ns >= 1<<(sketchMaxExp+1) {
			continue
		}
		v, rep := float64(ns)/1e9, binSeconds(int(b))
		if math.Abs(rep-v) > sketchRelErr*v+1e-18 {
			t.Fatalf("%d ns in bin %d, represented by %.9g s", ns, b, rep)
		}
	}
	if rttBin(-time.Second) != 0 {
		t.Error("a negative RTT is not in bin 0")
	}
}

// turnsFixture feeds a route of keys pinged in turns and keeps every
// sample in arrival order, to compare the graph's window with.
type turnsFixture struct {
	g    *Graph
	clk  *fakeClock
	id   string
	keys []RouteKey
	all  []Sample
	rng  *rand.Rand
	// jitter is RFC 3550's over every answered sample in arrival order.
	jitter, prev float64
}

func newTurnsFixture(t *testing.T, ringSize, nkeys int) *turnsFixture {
	t.Helper()
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Now, cfg.RingSize = clk.Now, ringSize
	f := &turnsFixture{g: New(cfg), clk: clk, rng: rand.New(rand.NewPCG(3, uint64(nkeys)))}
	for i := range nkeys {
		k := key(hA, hB, uint16(40000+i))
		id, _ := f.g.SetRoute(k, hops(hA, r1, hB))
		if f.id != "" && id != f.id {
			t.Fatal("keys on different routes")
		}
		f.id, f.keys = id, append(f.keys, k)
	}
	return f
}

// add sends one sample on key i, 100 ms after the previous one.
func (f *turnsFixture) add(i int) {
	f.clk.Advance(100 * time.Millisecond)
	s := Sample{Seq: uint64(len(f.all)), Sent: f.clk.Now(), Source: "ebpf",
		RTT: time.Duration(40_000 + f.rng.IntN(20_000) + 5_000*i)}
	if f.rng.IntN(10) == 0 {
		s = Sample{Seq: s.Seq, Sent: s.Sent, Lost: true, Dir: LossDir(f.rng.IntN(3)), Source: "ebpf"}
	}
	f.all = append(f.all, s)
	f.g.AddSample(f.keys[i], s)
	if !s.Lost {
		if v := s.RTT.Seconds(); f.prev != 0 {
			f.jitter += (math.Abs(v-f.prev) - f.jitter) / 16
		}
		f.prev = s.RTT.Seconds()
	}
}

func (f *turnsFixture) metrics(t *testing.T) Metrics {
	t.Helper()
	return routeByID(t, f.g.Snapshot(), f.id).Metrics
}

// TestWindowPortsTakingTurns: a route's window is its newest N to
// N+bucketSize−1 samples over all its keys, in time, whether one key
// carries every sample, 4 keys take turns round-robin or in stints; its
// metrics are those of exactly those samples (quantiles within the
// sketch's error), and Since is the oldest of them.
func TestWindowPortsTakingTurns(t *testing.T) {
	const n = 100
	bs := newFlowWindow(n).bucketSize
	schedules := map[string]func(i int) int{
		"one key":       func(int) int { return 0 },
		"round robin":   func(i int) int { return i % 4 },
		"stints of 7":   func(i int) int { return i / 7 % 4 },
		"stints of 150": func(i int) int { return i / 150 % 4 },
		"random":        nil,
	}
	for name, next := range schedules {
		t.Run(name, func(t *testing.T) {
			f := newTurnsFixture(t, n, 4)
			for i := range 1000 {
				k := 0
				if next != nil {
					k = next(i)
				} else {
					k = f.rng.IntN(4)
				}
				f.add(k)
				if i < 50 || i%37 != 0 {
					continue
				}
				m := f.metrics(t)
				// The window: whole epochs of bs samples, newest first,
				// until n.
				total := len(f.all)
				w := min(total, int(int64(total-1)%bs+1))
				for w < n && w < total {
					w = min(w+int(bs), total)
				}
				want := ComputeMetrics(f.all[total-w:])
				if m.Samples != w || m.Samples < min(n, total) || m.Samples > n+int(bs)-1 {
					t.Fatalf("after %d samples: window %d, want %d (in [%d, %d])", total, m.Samples, w, n, n+bs-1)
				}
				checkWindowMetrics(t, m, want)
				if math.Abs(m.JitterRFC3550-f.jitter) > 1e-15 {
					t.Fatalf("jitter %v, want the running RFC 3550 jitter %v", m.JitterRFC3550, f.jitter)
				}
				if !m.Since.Equal(f.all[total-w].Sent) {
					t.Fatalf("since %v, want the oldest sample in the window %v", m.Since, f.all[total-w].Sent)
				}
			}
		})
	}
}

// checkWindowMetrics compares the graph's window metrics with the exact
// ones of the same samples.
func checkWindowMetrics(t *testing.T, got, want Metrics) {
	t.Helper()
	if got.Samples != want.Samples || got.Lost != want.Lost || got.LostForward != want.LostForward ||
		got.LostReverse != want.LostReverse || got.Source != want.Source {
		t.Fatalf("counters: got %+v\nwant %+v", got, want)
	}
	exact := [][2]float64{{got.Loss, want.Loss}, {got.LossForward, want.LossForward}, {got.LossReverse, want.LossReverse},
		{got.RTTMin, want.RTTMin}, {got.RTTMax, want.RTTMax}}
	for i, p := range exact {
		if p[0] != p[1] {
			t.Fatalf("field %d: got %v want %v", i, p[0], p[1])
		}
	}
	close := [][2]float64{{got.RTTAvg, want.RTTAvg}, {got.JitterStddev, want.JitterStddev}}
	for i, p := range close {
		if math.Abs(p[0]-p[1]) > 1e-9*p[1]+1e-15 {
			t.Fatalf("moment %d: got %v want %v", i, p[0], p[1])
		}
	}
	for _, p := range [][2]float64{{got.RTTP50, want.RTTP50}, {got.RTTP99, want.RTTP99}} {
		if math.Abs(p[0]-p[1]) > sketchRelErr*p[1]+1e-15 {
			t.Fatalf("quantile: got %v want %v (beyond %.2g%%)", p[0], p[1], 100*sketchRelErr)
		}
	}
}

// TestWindowAfterRefinement: a key that moves to a refined route (its
// silent hop filled in) brings its samples, and they count among the
// newest of the new route's window.
func TestWindowAfterRefinement(t *testing.T) {
	g, clk := newTestGraph(t)
	moving, other := key(hA, hB, 40000), key(hA, hB, 41000)
	id2, _ := g.SetRoute(other, hops(hA, r2, hB))
	g.SetRoute(moving, hops(hA, "*", hB))
	for range 300 {
		clk.Advance(100 * time.Millisecond)
		g.AddSample(other, Sample{Sent: clk.Now(), RTT: time.Millisecond})
	}
	movedSince := clk.Now().Add(time.Millisecond)
	for range 10 {
		clk.Advance(100 * time.Millisecond)
		g.AddSample(moving, Sample{Sent: clk.Now(), RTT: 2 * time.Millisecond})
	}
	id, pc := g.SetRoute(moving, hops(hA, r2, hB))
	if pc != nil || id != id2 {
		t.Fatalf("refinement: route %s change %v, want %s and none", id, pc, id2)
	}
	m := routeByID(t, g.Snapshot(), id2).Metrics
	if m.Samples < 100 || m.Samples > 112 || m.RTTMax != 0.002 {
		t.Fatalf("refined route's window: %d samples, max RTT %v; want 100–112 including the moved key's 2 ms", m.Samples, m.RTTMax)
	}
	if m.Since.After(movedSince) || m.Since.Before(movedSince.Add(-12*time.Second)) {
		t.Fatalf("window since %v; want about 100 samples (10 s) before %v", m.Since, movedSince)
	}
}

// TestFlowStateMemory: a key's state at the default window is at most
// bucketsPerKey buckets of 112 bytes, under a fifth of the 100 samples a
// ring kept, and adding a sample allocates nothing once the ring is full.
func TestFlowStateMemory(t *testing.T) {
	w := newFlowWindow(100)
	if s := unsafe.Sizeof(flowBucket{}); s != 112 {
		t.Errorf("flowBucket is %d bytes, want 112", s)
	}
	f := newFlowState()
	for i := range 1000 {
		w.add(f, Sample{Sent: time.Unix(int64(i), 0), RTT: time.Duration(50_000 + i%977)})
	}
	perKey := int(unsafe.Sizeof(*f)) + cap(f.ring)*int(unsafe.Sizeof(flowBucket{}))
	ring := 100 * int(unsafe.Sizeof(Sample{}))
	if cap(f.ring) != w.bucketsPerKey || perKey*5 > ring {
		t.Errorf("per key: %d buckets, %d bytes; a 100-sample ring was %d bytes", cap(f.ring), perKey, ring)
	}
	t.Logf("per key: %d B (%d buckets); 100-sample ring: %d B", perKey, cap(f.ring), ring)
	i := 0
	if a := testing.AllocsPerRun(1000, func() {
		i++
		w.add(f, Sample{Sent: time.Unix(int64(2000+i), 0), RTT: time.Duration(50_000 + i%977), Lost: i%9 == 0})
	}); a != 0 {
		t.Errorf("AddSample allocates %.1f times", a)
	}
}

// TestKeyExcessTakingTurns: with 4 keys taking turns, each key's excess
// comes from its own samples in the route window: the one key whose RTT
// rose 1 ms shows 1 ms (within the sketch's error), the others 0, and a
// key that has not been pinged within the window says -1.
func TestKeyExcessTakingTurns(t *testing.T) {
	f := newTurnsFixture(t, 100, 5)
	rtt := func(k, i int) time.Duration { return 100*time.Microsecond + time.Duration(i%7)*time.Microsecond }
	send := func(n int, slow time.Duration) {
		for i := range n {
			k := i % 4
			f.clk.Advance(100 * time.Millisecond)
			d := rtt(k, i)
			if k == 2 {
				d += slow
			}
			f.g.AddSample(f.keys[k], Sample{Sent: f.clk.Now(), RTT: d, Source: "ebpf"})
		}
	}
	f.g.AddSample(f.keys[4], Sample{Sent: f.clk.Now(), RTT: time.Millisecond, Source: "ebpf"})
	send(400, 0)
	send(200, time.Millisecond)
	m := f.metrics(t)
	for k, e := range m.RTTExcessByKey {
		want := 0.0
		switch k {
		case 2:
			want = 1e-3
		case 4:
			want = -1
		}
		if math.Abs(e-want) > 2*sketchRelErr*1.1e-3 {
			t.Errorf("key %d: excess %v, want %v", k, e, want)
		}
	}
	if m.RTTBaseline < 100e-6*(1-sketchRelErr) || m.RTTBaseline > 101e-6 {
		t.Errorf("route baseline %v, want ≈ 100 µs", m.RTTBaseline)
	}
}

// TestResolvesLoss: a Resolves sample gives an earlier unknown loss of the
// flow its direction without counting a new sample; one that matches no
// unknown loss in the window changes nothing.
func TestResolvesLoss(t *testing.T) {
	g, clk := newTestGraph(t)
	g.SetRoute(kAB, hops(hA, r1, hB))
	lostAt := clk.Now()
	g.AddSample(kAB, Sample{Seq: 1, Sent: lostAt, Lost: true, Source: "user"})
	clk.Advance(time.Second)
	g.AddSample(kAB, Sample{Seq: 2, Sent: clk.Now(), RTT: time.Millisecond, Source: "user"})
	metrics := func() Metrics {
		g.Flush()
		return g.Snapshot().Routes[0].Metrics
	}
	if m := metrics(); m.Samples != 2 || m.Lost != 1 || m.LostForward != 0 {
		t.Fatalf("before: %+v", m)
	}
	g.AddSample(kAB, Sample{Seq: 1, Sent: lostAt, Lost: true, Dir: LossForward, Resolves: true, Source: "user"})
	if m := metrics(); m.Samples != 2 || m.Lost != 1 || m.LostForward != 1 || m.LostReverse != 0 {
		t.Errorf("resolved forward: samples %d lost %d fwd %d rev %d, want 2 1 1 0", m.Samples, m.Lost, m.LostForward, m.LostReverse)
	}
	g.AddSample(kAB, Sample{Seq: 1, Sent: lostAt, Lost: true, Dir: LossReverse, Resolves: true, Source: "user"})
	if m := metrics(); m.LostForward != 1 || m.LostReverse != 0 {
		t.Errorf("a second resolution of the same loss moved counts: fwd %d rev %d", m.LostForward, m.LostReverse)
	}
}
