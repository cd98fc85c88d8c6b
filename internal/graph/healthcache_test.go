package graph

import (
	"sync"
	"testing"
	"time"
)

// TestHealthCache: the estimator runs once per event id however many
// readers ask, again after a change, and every caller gets its own copy.
func TestHealthCache(t *testing.T) {
	g, clk := newTestGraph(t)
	g.SetRoute(kAB, hops(hA, r1, hB))
	for i := 0; i < 10; i++ {
		g.AddSample(kAB, Sample{Seq: uint64(i), Sent: clk.Now(), Lost: i%2 == 0, Dir: LossForward, Source: "user"})
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rows := g.Health(); len(rows) != 2 {
				t.Errorf("%d rows, want 2", len(rows))
			}
		}()
	}
	wg.Wait()
	if n := g.healthRuns(); n != 1 {
		t.Fatalf("estimator ran %d times for one event id, want 1", n)
	}
	rows, id := g.HealthAt()
	rows[0].Src = "scribbled"
	if again := g.Health(); again[0].Src == "scribbled" {
		t.Error("Health returned the cached slice itself")
	}
	clk.Advance(2 * time.Second)
	g.AddSample(kAB, Sample{Seq: 99, Sent: clk.Now(), RTT: time.Millisecond, Source: "user"})
	if _, id2 := g.HealthAt(); id2 == id {
		t.Fatalf("event id still %d after a sample past the coalescing interval", id)
	}
	if n := g.healthRuns(); n != 2 {
		t.Errorf("estimator ran %d times after one change, want 2", n)
	}
}

// TestKeyExcess: a key's excess is its ring p50 over the lowest ring 10th
// percentile of the baseline window; the baseline survives the key leaving
// the hop list and coming back, and a key whose ring has no RTT says -1.
func TestKeyExcess(t *testing.T) {
	g, clk := newTestGraph(t)
	send := func(k RouteKey, rtt time.Duration, n int) {
		for i := 0; i < n; i++ {
			clk.Advance(10 * time.Millisecond)
			g.AddSample(k, Sample{Sent: clk.Now(), RTT: rtt, Source: "ebpf"})
		}
	}
	excessOf := func(k RouteKey) float64 {
		t.Helper()
		g.Flush()
		for _, r := range g.Snapshot().Routes {
			for i, rk := range r.Keys {
				if rk == k {
					return r.Metrics.RTTExcessByKey[i]
				}
			}
		}
		t.Fatalf("no route holds %v", k)
		return 0
	}
	kAB2 := key(hA, hB, 40001)
	g.SetRoute(kAB, hops(hA, r1, hB))
	g.SetRoute(kAB2, hops(hA, r1, hB))
	send(kAB, 100*time.Microsecond, 100)
	if e := excessOf(kAB); e < 0 || e > 1e-9 {
		t.Fatalf("steady key: excess %v, want 0", e)
	}
	if e := excessOf(kAB2); e != -1 {
		t.Errorf("key without samples: excess %v, want -1", e)
	}
	send(kAB, 1100*time.Microsecond, 100) // the ring turns over: 1 ms slower
	if e := excessOf(kAB); e < 0.9e-3 || e > 1.1e-3 {
		t.Fatalf("after 1 ms more: excess %v, want 1 ms", e)
	}
	// The key moves to another path (the route on r1 is deleted: no key
	// left) and back: its baseline on r1 stays.
	g.RemoveRoute(kAB2)
	g.SetRoute(kAB, hops(hA, r2, hB))
	g.SetRoute(kAB, hops(hA, r1, hB))
	send(kAB, 1100*time.Microsecond, 100)
	if e := excessOf(kAB); e < 0.9e-3 {
		t.Errorf("back on the old path: excess %v, want 1 ms (baseline kept)", e)
	}
	// Past the window the old floor is forgotten.
	clk.Advance(DefaultConfig().BaselineWindow + time.Minute)
	send(kAB, 1100*time.Microsecond, 100)
	if e := excessOf(kAB); e > 1e-9 {
		t.Errorf("a window later: excess %v, want 0", e)
	}
}

func TestBaselineWindow(t *testing.T) {
	b := newBaseline(8 * time.Minute) // 1-minute buckets
	t0 := time.Unix(1000*60, 0)
	if got := b.observe(t0, 5); got != 5 {
		t.Fatalf("first: %v", got)
	}
	if got := b.observe(t0.Add(3*time.Minute), 7); got != 5 {
		t.Errorf("3 min later: %v, want the floor 5", got)
	}
	if got := b.observe(t0.Add(3*time.Minute), 0); got != 5 {
		t.Errorf("no RTT: %v, want 5", got)
	}
	if got := b.observe(t0.Add(9*time.Minute), 8); got != 7 {
		t.Errorf("9 min later: %v, want 7 (the 5 left the window)", got)
	}
	if b.stale(t0.Add(10 * time.Minute)) {
		t.Error("stale with a value 1 min old")
	}
	if !b.stale(t0.Add(20 * time.Minute)) {
		t.Error("not stale 11 min after the last value")
	}
}
