package graph_test

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
)

// BenchmarkAggregatorHealthRepeat: the health run an aggregator makes
// after every change batch, warm (the cache's estimator, which reuses the
// last run's index and starts its fit from the last estimates) against
// cold (the estimator's first run, as before), on the same graph state in
// the same run, over the scale harness's route set. Each iteration is one
// batch: every route's window of 100 samples (a background loss fixed per
// link in [0, 0.01%), two faulty links at 1% and 0.3%) takes new samples,
// 5 (an aggregation interval of 5 s at a ping a second) or all 100 (the
// worst case: a whole new window), applied as member route-batches
// (ImportMetrics); with churn, k routes also leave and the k that left in
// the batch before come back (so the index is rebuilt, and the fit still
// starts warm); then health runs warm, then cold, and the two rankings are compared (same verdicts, estimates within
// 2 lost probes over the link's samples or 0.025%). Run:
//
//	go test -run '^$' -bench AggregatorHealthRepeat -benchtime 5x ./internal/graph
func BenchmarkAggregatorHealthRepeat(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, mode := range []struct{ newSamples, churn int }{{5, 0}, {100, 0}, {5, 100}} {
			newSamples := mode.newSamples
			name := fmt.Sprintf("N=%d/new=%d", n, newSamples)
			if mode.churn > 0 {
				name += fmt.Sprintf("/churn=%d", mode.churn)
			}
			b.Run(name, func(b *testing.B) {
				routes := harnessRoutes(n)
				rng := rand.New(rand.NewPCG(3, 4))
				g := importHarness(routes, rng, false)
				w := newLossWorld(routes)
				w.batch(g, routes, rng, 0)
				g.Health() // the first run, cold: the next ones have a last run
				var cold, warm time.Duration
				var coldCPU, warmCPU time.Duration
				var sweepsCold, sweepsWarm int
				for i := 0; i < b.N; i++ {
					w.batch(g, routes, rng, newSamples)
					if mode.churn > 0 {
						w.churn(g, routes, mode.churn, i)
					}
					// Metrics-only updates may be held back (coalesced),
					// and the cached rows kept until they go out: drop
					// the rows, keep the estimator.
					graph.ForgetHealth(g)
					runtime.GC()
					c0, t0 := graph.CPUTime(), time.Now()
					got := g.Health()
					warm += time.Since(t0)
					warmCPU += graph.CPUTime() - c0
					_, reused, warmRuns, sw := graph.HealthEstimatorStats(g)
					sweepsWarm += sw
					if mode.churn > 0 {
						reused++ // the routes changed: the index is rebuilt
					}
					if reused != 1 || warmRuns != 1 {
						b.Fatalf("batch %d: the run after the cold one reused the index %d times and started warm %d times, want 1 and 1", i, reused, warmRuns)
					}

					graph.ColdHealth(g)
					runtime.GC()
					c0, t0 = graph.CPUTime(), time.Now()
					want := g.Health()
					cold += time.Since(t0)
					coldCPU += graph.CPUTime() - c0
					_, _, _, sw = graph.HealthEstimatorStats(g)
					sweepsCold += sw
					if err := sameVerdicts(got, want, 2); err != nil {
						b.Fatalf("batch %d: warm vs cold: %v", i, err)
					}
				}
				nb := float64(b.N)
				b.ReportMetric(float64(len(routes)), "routes")
				b.ReportMetric(float64(cold.Milliseconds())/nb, "cold-ms")
				b.ReportMetric(float64(warm.Milliseconds())/nb, "warm-ms")
				b.ReportMetric(float64(coldCPU.Milliseconds())/nb, "cold-cpu-ms")
				b.ReportMetric(float64(warmCPU.Milliseconds())/nb, "warm-cpu-ms")
				b.ReportMetric(float64(cold)/float64(warm), "cold/warm")
				b.ReportMetric(float64(sweepsCold)/nb, "cold-sweeps")
				b.ReportMetric(float64(sweepsWarm)/nb, "warm-sweeps")
			})
		}
	}
}

// lossWorld is every link's loss: a background fixed per link in
// [0, 0.01%) and two faulty links.
type lossWorld struct {
	loss map[[2]string]float64
	win  []window // per route
	gone []aggRoute
}

func newLossWorld(routes []aggRoute) *lossWorld {
	w := &lossWorld{loss: map[[2]string]float64{}}
	var fabric [][2]string
	for _, r := range routes {
		for j := 1; j < len(r.hops); j++ {
			l := [2]string{r.hops[j-1], r.hops[j]}
			if _, ok := w.loss[l]; !ok {
				h := fnv.New64a()
				h.Write([]byte(l[0] + "→" + l[1]))
				w.loss[l] = 1e-4 * float64(h.Sum64()>>11) / (1 << 53)
				if j > 1 && j < len(r.hops)-1 {
					fabric = append(fabric, l)
				}
			}
		}
	}
	w.loss[fabric[len(fabric)/3]] = 0.01
	w.loss[fabric[2*len(fabric)/3]] = 0.003
	return w
}

// window is the samples of a route's window (100, newest last; true:
// lost).
type window [100]bool

// batch moves every route's window on by newSamples samples (5: an
// aggregation interval of 5 s at one ping a second; the window: 100) and
// sends the windows' counts, one route-batch per origin. The first batch
// fills the windows.
func (w *lossWorld) batch(g *graph.Graph, routes []aggRoute, rng *rand.Rand, newSamples int) {
	if w.win == nil {
		w.win = make([]window, len(routes))
		newSamples = len(window{})
	}
	byOrigin := map[string][]graph.RouteMetrics{}
	for i, r := range routes {
		keep := 1.0
		for j := 1; j < len(r.hops); j++ {
			keep *= 1 - w.loss[[2]string{r.hops[j-1], r.hops[j]}]
		}
		win := &w.win[i]
		copy(win[:], win[newSamples:])
		for k := len(win) - newSamples; k < len(win); k++ {
			win[k] = rng.Float64() >= keep
		}
		lost := 0
		for _, l := range win {
			if l {
				lost++
			}
		}
		o := r.src.String()
		byOrigin[o] = append(byOrigin[o], graph.RouteMetrics{ID: graph.RouteID(r.hops), Src: r.src, Dst: r.dst,
			Metrics: graph.Metrics{Samples: 100, Lost: lost, LostForward: lost, RTTMin: 20e-6, RTTAvg: 30e-6,
				RTTP50: 30e-6, RTTP99: 50e-6, RTTMax: 60e-6, Source: "ebpf"}})
	}
	for o, batch := range byOrigin {
		if n := g.ImportMetrics(o, batch); n != len(batch) && len(w.gone) == 0 {
			panic(fmt.Sprintf("origin %s: %d of %d routes updated", o, n, len(batch)))
		}
	}
}

// lossTol is half the estimator's NegligibleLoss: estimates that differ
// by less, under the loss a verdict needs, count as the same.
const lossTol = 0.00025

// sameVerdicts: every link has the same verdict in got and want, and an
// estimated loss within tol lost probes over its samples or within
// lossTol.
func sameVerdicts(got, want []graph.LinkHealth, tol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d rows, want %d", len(got), len(want))
	}
	by := map[graph.LinkID]graph.LinkHealth{}
	for _, r := range want {
		by[graph.LinkID{Src: r.Src, Dst: r.Dst}] = r
	}
	for _, r := range got {
		c := by[graph.LinkID{Src: r.Src, Dst: r.Dst}]
		if r.Verdict != c.Verdict {
			return fmt.Errorf("%s→%s: %s, want %s", r.Src, r.Dst, r.Verdict, c.Verdict)
		}
		if d := math.Abs(r.EstimatedLoss-c.EstimatedLoss) * float64(max(c.SamplesThrough, 1)); d > tol && math.Abs(r.EstimatedLoss-c.EstimatedLoss) > lossTol {
			return fmt.Errorf("%s→%s: estimated loss %.6f, want %.6f (%.2f probes)", r.Src, r.Dst, r.EstimatedLoss, c.EstimatedLoss, d)
		}
	}
	return nil
}

// churn removes k routes (the i-th k of them) and imports again the ones
// it removed the batch before, with their current windows.
func (w *lossWorld) churn(g *graph.Graph, routes []aggRoute, k, i int) {
	for _, r := range w.gone {
		keys := make([]graph.RouteKey, len(r.ports))
		for j, p := range r.ports {
			keys[j] = graph.RouteKey{Src: r.src, Dst: r.dst, SrcPort: p}
		}
		g.ImportRoute(r.src.String(), graph.Route{Src: r.src, Dst: r.dst, Hops: r.hops, Keys: keys,
			Metrics: graph.Metrics{Samples: 100, RTTMin: 20e-6, RTTAvg: 30e-6, RTTP50: 30e-6, RTTP99: 50e-6, RTTMax: 60e-6, Source: "ebpf"}})
	}
	w.gone = w.gone[:0]
	for j := range k {
		r := routes[(i*k+j)*7919%len(routes)]
		for _, p := range r.ports {
			g.RemoveImportedRoute(r.src.String(), graph.RouteKey{Src: r.src, Dst: r.dst, SrcPort: p})
		}
		w.gone = append(w.gone, r)
	}
}
