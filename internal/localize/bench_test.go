package localize

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Localization tables on a 1,024-link fabric with the independent scenario
// generator (scenario_test.go). Run:
//
//	go test -run '^$' -bench Scenarios -benchtime 1x ./internal/localize
//
// Loss rows: one or five faulty links (random fabric or host links) at the
// given loss over background noise U[0, 0.01%] per link, with samples per
// key (100 per key ≈ 100 s of pings at 1/s); P@1 is the share of trials
// whose first row by estimate (?sort=estimate) is a fault, recall and F1
// count `faulty` verdicts. Delay rows: one fabric link gets the delay, the
// time source sets the per-sample RTT error; P@1 is the share of trials
// whose top row by estimated delay is that link, and slow-recall the share
// flagged `slow` (SlowMinSeconds 100 µs: a delay below it is found but not
// called slow).

// bigFabric: 8 spines × 32 leaves × 8 hosts: 512 leaf–spine and 512 host
// links.
func bigFabric() *fabric { return newFabric(8, 32, 8) }

type lossRow struct {
	faults  int
	loss    float64
	samples int
}

func runLossRow(f *fabric, r lossRow, trials int) (p1, recall, f1 float64, healthyFaulty int) {
	var tp, fp, fn, top int
	for trial := 0; trial < trials; trial++ {
		rng := rand.New(rand.NewPCG(uint64(trial), uint64(r.faults*1000+r.samples)))
		w := &world{loss: f.noise(rng, 1e-4), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
		fl, hl := f.links()
		all := append(fl, hl...)
		truth := map[link]bool{}
		for len(truth) < r.faults {
			l := all[rng.IntN(len(all))]
			truth[l] = true
			w.loss[l] = r.loss
		}
		hz := defaultHazards
		hz.samples = r.samples
		rows := Run(f.generate(rng, w, hz), Config{})
		SortByEstimate(rows)
		if truth[link{rows[0].Src, rows[0].Dst}] {
			top++
		}
		a, b, c, _ := score(rows, VerdictFaulty, truth)
		tp, fp, fn = tp+a, fp+b, fn+c
		if r.faults == 0 {
			healthyFaulty += b
		}
	}
	p1 = float64(top) / float64(trials)
	recall = ratio(float64(tp), float64(tp+fn))
	prec := ratio(float64(tp), float64(tp+fp))
	if prec+recall > 0 {
		f1 = 2 * prec * recall / (prec + recall)
	}
	return p1, recall, f1, healthyFaulty
}

func runDelayRow(f *fabric, src timeSource, d float64, trials int) (p1, slowRecall float64, falseSlow int) {
	var top, slow int
	for trial := 0; trial < trials; trial++ {
		rows, l := slowRun(uint64(trial), f, src, d, defaultHazards)
		if topByDelay(rows) == l {
			top++
		}
		for _, r := range rows {
			if r.Verdict == VerdictSlow {
				if (link{r.Src, r.Dst}) == l {
					slow++
				} else {
					falseSlow++
				}
			}
		}
	}
	return float64(top) / float64(trials), float64(slow) / float64(trials), falseSlow
}

func BenchmarkScenarios(b *testing.B) {
	f := bigFabric()
	for i := 0; i < b.N; i++ {
		var t strings.Builder
		fmt.Fprintf(&t, "\nloss, 1,024 links, noise U[0,0.01%%], 10%% of losses of unknown direction, 12 peers × 4 ports per host\n")
		fmt.Fprintf(&t, "%-7s %-6s %-8s | %6s %6s %6s | %s\n", "faults", "loss", "samples", "P@1", "recall", "F1", "faulty on healthy links")
		for _, r := range []lossRow{
			{0, 0, 100}, {1, 0.002, 100}, {1, 0.002, 300}, {1, 0.002, 1000}, {1, 0.003, 300}, {1, 0.005, 100}, {1, 0.005, 300},
			{5, 0.002, 1000}, {5, 0.005, 300}, {5, 0.02, 100},
		} {
			p1, rec, f1, hf := runLossRow(f, r, 10)
			fmt.Fprintf(&t, "%-7d %-6s %-8d | %6.2f %6.2f %6.2f | %d\n", r.faults, fmt.Sprintf("%.1f%%", 100*r.loss), r.samples, p1, rec, f1, hf)
		}
		fmt.Fprintf(&t, "\ndelay on one link, per time source (100 samples per key)\n")
		fmt.Fprintf(&t, "%-7s %-8s | %6s %11s %10s\n", "source", "delay", "P@1", "slow-recall", "false slow")
		for _, src := range []timeSource{srcEBPF, srcKernel, srcUser} {
			for _, d := range []float64{5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6} {
				p1, sr, fs := runDelayRow(f, src, d, 10)
				fmt.Fprintf(&t, "%-7s %-8s | %6.2f %11.2f %10d\n", src.name, fmt.Sprintf("%.0fµs", d*1e6), p1, sr, fs)
			}
		}
		b.Log(t.String())
	}
}

// BenchmarkRun times one estimator run on issue 14's size: 16 spines × 128
// leaves × 32 hosts (12,288 links), 20 peers × 4 ports per host (~300,000
// routes), two faulty links, noise everywhere. Run:
//
//	go test -run '^$' -bench 'Run$' -benchtime 3x ./internal/localize
func BenchmarkRun(b *testing.B) {
	in, _, _ := runBenchRoutes()
	runtime.GC() // do not charge the generator's garbage to Run
	b.ResetTimer()
	cpu0 := cpuTime()
	var rows []Row
	for i := 0; i < b.N; i++ {
		rows = Run(in, Config{})
	}
	// CPU time (GC included) per run: on a shared machine wall time
	// includes waiting for a core.
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(len(in)), "routes")
	b.ReportMetric(float64(len(rows)), "links")
}

// runBenchRoutes is BenchmarkRun's route set, its world and the random
// source that drew it.
func runBenchRoutes() ([]Input, *world, *rand.Rand) {
	f := newFabric(16, 128, 32)
	rng := rand.New(rand.NewPCG(5, 5))
	w := &world{loss: f.noise(rng, 1e-4), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
	fl, _ := f.links()
	w.loss[fl[10]], w.loss[fl[999]] = 0.01, 0.003
	return f.generate(rng, w, hazards{peers: 20, ports: 4, samples: 10, noiseMax: 1e-4, unknownFrac: 0.1}), w, rng
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRunWarm: the repeated runs an aggregator makes, on
// BenchmarkRun's graph (12,288 links, ~342k routes, by node number as the
// graph hands them over): a cold run (RunNumbered: index, fit from "no
// loss") against an Estimator's warm run (index reused, fit from the last
// run's estimates) on the same input, in the same run. Each iteration is
// a new window in which a share of the routes (5%, or all of them) got
// new counts; the two rankings must agree (TestEstimatorWarmMatchesCold's
// rule). Run:
//
//	go test -run '^$' -bench 'RunWarm' -benchtime 5x ./internal/localize
func BenchmarkRunWarm(b *testing.B) {
	byName, w, rng := runBenchRoutes()
	hops := make([][]string, len(byName))
	for i, r := range byName {
		hops[i] = r.Hops
	}
	names, in := numbered(byName)
	for _, share := range []float64{0.05, 1} {
		b.Run(fmt.Sprintf("changed=%.0f%%", 100*share), func(b *testing.B) {
			var e Estimator
			e.RunNumbered(names, in, Config{})
			var cold, warm, coldCPU, warmCPU time.Duration
			var sweeps int
			cur := slices.Clone(in)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				fresh := redraw(cur, hops, w, rng)
				for p := range cur {
					if rng.Float64() < share {
						cur[p] = fresh[p]
					}
				}
				runtime.GC()
				b.StartTimer()
				c0, t0 := cpuTime(), time.Now()
				want := RunNumbered(names, cur, Config{})
				cold += time.Since(t0)
				coldCPU += cpuTime() - c0
				runtime.GC()
				c0, t0 = cpuTime(), time.Now()
				got := e.RunNumbered(names, cur, Config{})
				warm += time.Since(t0)
				warmCPU += cpuTime() - c0
				_, _, _, sw := e.Stats()
				sweeps += sw
				if err := sameAnswers(got, want, 2); err != nil {
					b.Fatalf("window %d: warm vs cold: %v", i, err)
				}
			}
			if _, reused, warmRuns, _ := e.Stats(); reused != b.N || warmRuns != b.N {
				b.Fatalf("%d windows: %d reused the index, %d warm", b.N, reused, warmRuns)
			}
			nb := float64(b.N)
			b.ReportMetric(float64(cold.Milliseconds())/nb, "cold-ms")
			b.ReportMetric(float64(warm.Milliseconds())/nb, "warm-ms")
			b.ReportMetric(float64(coldCPU.Milliseconds())/nb, "cold-cpu-ms")
			b.ReportMetric(float64(warmCPU.Milliseconds())/nb, "warm-cpu-ms")
			b.ReportMetric(float64(coldCPU)/float64(warmCPU), "cold/warm-cpu")
			b.ReportMetric(float64(sweeps)/nb, "warm-sweeps")
		})
	}
}
