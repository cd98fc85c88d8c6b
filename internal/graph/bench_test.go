package graph

import (
	"encoding/json"
	"github.com/dnms/dnms/internal/localize"
	"os"
	"path/filepath"

	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Localization benchmark (issue 5). Run:
//
//	go test -run '^$' -bench Localization -benchtime 1x ./internal/graph
//
// BenchmarkLocalization/accuracy prints a table of precision@1 and F1 of the
// seed score and of the estimator over random faults on a synthetic Clos;
// BenchmarkLocalization/time-* time one health computation.

var locFabrics = map[string]closSim{
	// The same fabric with 5x the background loss (up to 0.1% per link, real
	// low-level loss) and half the losses of unknown direction.
	"1k-noisy": {Spines: 8, Leaves: 32, HostsPerLeaf: 8, Peers: 16, Ports: 4, Samples: 100, NoiseMax: 1e-3, UnknownFrac: 0.5},
	// No reflector counters at all: every loss of unknown direction.
	"1k-nodir": {Spines: 8, Leaves: 32, HostsPerLeaf: 8, Peers: 16, Ports: 4, Samples: 100, NoiseMax: 2e-4, UnknownFrac: 1},
	// 8 spines x 32 leaves x 8 hosts: 512 host links + 512 leaf-spine
	// links = 1,024 directed links.
	"1k": {Spines: 8, Leaves: 32, HostsPerLeaf: 8, Peers: 32, Ports: 4, Samples: 100, NoiseMax: 2e-4, UnknownFrac: 0.1},
	// 16 spines x 128 leaves x 32 hosts: 8,192 + 4,096 = 12,288 links.
	"10k": {Spines: 16, Leaves: 128, HostsPerLeaf: 32, Peers: 8, Ports: 4, Samples: 100, NoiseMax: 2e-4, UnknownFrac: 0.1},
	// The same with 10 peers per host: ~300,000 routes (each key and its
	// reverse), issue 14's size; "10k" has 237k.
	"10k-300k": {Spines: 16, Leaves: 128, HostsPerLeaf: 32, Peers: 10, Ports: 4, Samples: 100, NoiseMax: 2e-4, UnknownFrac: 0.1},
	// And with 20 peers: ~300,000 flows each way, 591k routes.
	"10k-600k": {Spines: 16, Leaves: 128, HostsPerLeaf: 32, Peers: 20, Ports: 4, Samples: 100, NoiseMax: 2e-4, UnknownFrac: 0.1},
}

type locScenario struct {
	name   string
	faults int
	trials int
}

type locResult struct {
	scen                     locScenario
	seedP1, estP1            float64
	seedF1, estF1            float64
	falseFaulty, missed      int
	healthyFaulty, suspected int
	avgTime                  time.Duration
}

// runScenario injects sc.faults random faults (loss log-uniform in
// [0.5%, 10%]) on random links over background noise, trials times.
// Seed-score F1 takes the top-|faults| rows by suspicion (an oracle k, which
// flatters it); estimator F1 takes the rows with verdict faulty.
func runScenario(f *closFabric, sc locScenario, seed uint64) locResult {
	rng := rand.New(rand.NewPCG(seed, uint64(sc.faults)))
	res := locResult{scen: sc}
	var tp, fp, fn, stp, sfp, sfn int
	var p1seed, p1est int
	var total time.Duration
	hc := DefaultHealthConfig()
	for trial := 0; trial < sc.trials; trial++ {
		loss := f.noise(rng)
		truth := make(map[LinkID]bool)
		for len(truth) < sc.faults {
			l := f.links[rng.IntN(len(f.links))]
			if truth[l] {
				continue
			}
			truth[l] = true
			loss[l] = 0.005 * math.Pow(20, rng.Float64())
		}
		routes := f.routes(rng, loss)
		start := cpuTime()
		rows := localize.Run(inputsOf(routes), hc)
		total += cpuTime() - start

		if sc.faults == 0 {
			for _, r := range rows {
				switch r.Verdict {
				case VerdictFaulty:
					res.healthyFaulty++
				case VerdictSuspect:
					res.suspected++
				}
			}
			continue
		}
		// Seed: rows are sorted by suspicion.
		if truth[LinkID{rows[0].Src, rows[0].Dst}] {
			p1seed++
		}
		for i, r := range rows {
			hit := truth[LinkID{r.Src, r.Dst}]
			switch {
			case i < sc.faults && hit:
				stp++
			case i < sc.faults:
				sfp++
			case hit:
				sfn++
			}
		}
		// Estimator: rank by verdict, then estimated loss.
		est := slices.Clone(rows)
		slices.SortStableFunc(est, func(a, b LinkHealth) int {
			if c := cmp.Compare(verdictRank(b.Verdict), verdictRank(a.Verdict)); c != 0 {
				return c
			}
			return cmp.Compare(b.EstimatedLoss, a.EstimatedLoss)
		})
		if truth[LinkID{est[0].Src, est[0].Dst}] {
			p1est++
		}
		for _, r := range est {
			hit := truth[LinkID{r.Src, r.Dst}]
			faulty := r.Verdict == VerdictFaulty
			switch {
			case faulty && hit:
				tp++
			case faulty:
				fp++
				res.falseFaulty++
			case hit:
				fn++
				res.missed++
			}
		}
	}
	res.avgTime = total / time.Duration(sc.trials)
	if sc.faults > 0 {
		res.seedP1 = float64(p1seed) / float64(sc.trials)
		res.estP1 = float64(p1est) / float64(sc.trials)
		res.seedF1 = f1(stp, sfp, sfn)
		res.estF1 = f1(tp, fp, fn)
	}
	return res
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func verdictRank(v Verdict) int {
	switch v {
	case VerdictFaulty:
		return 2
	case VerdictSuspect:
		return 1
	}
	return 0
}

func f1(tp, fp, fn int) float64 {
	if tp == 0 {
		return 0
	}
	p := float64(tp) / float64(tp+fp)
	r := float64(tp) / float64(tp+fn)
	return 2 * p * r / (p + r)
}

func locTable(fabric string, f *closFabric, trials int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfabric %s: %d links, %d keys, %d samples/key, noise U[0,%.2g] per link, %.0f%% losses of unknown direction\n",
		fabric, len(f.links), len(f.keys), f.sim.Samples, f.sim.NoiseMax, 100*f.sim.UnknownFrac)
	fmt.Fprintf(&b, "%-8s %6s | %8s %8s | %8s %8s | %7s %7s | %8s %8s | %9s\n",
		"faults", "trials", "seed P@1", "seed F1", "est P@1", "est F1", "false+", "missed", "healthy", "healthy", "CPU time")
	fmt.Fprintf(&b, "%-8s %6s | %8s %8s | %8s %8s | %7s %7s | %8s %8s | %9s\n",
		"", "", "", "(top-k)", "", "(faulty)", "faulty", "faults", "faulty", "suspect", "per run")
	for i, sc := range []locScenario{{"healthy", 0, trials}, {"1", 1, trials}, {"2", 2, trials}, {"3", 3, trials}} {
		r := runScenario(f, sc, uint64(1000+i))
		fmt.Fprintf(&b, "%-8s %6d | %8.3f %8.3f | %8.3f %8.3f | %7d %7d | %8d %8d | %9s\n",
			sc.name, sc.trials, r.seedP1, r.seedF1, r.estP1, r.estF1, r.falseFaulty, r.missed,
			r.healthyFaulty, r.suspected, r.avgTime.Round(time.Millisecond))
	}
	return b.String()
}

func BenchmarkLocalization(b *testing.B) {
	b.Run("accuracy", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, c := range []struct {
				name   string
				trials int
			}{{"1k", 50}, {"1k-noisy", 20}, {"1k-nodir", 20}, {"10k", 5}} {
				f := locFabrics[c.name].build(rand.New(rand.NewPCG(7, 7)))
				b.Log(locTable(c.name, f, c.trials))
			}
		}
	})
	for _, name := range []string{"1k", "10k", "10k-300k", "10k-600k"} {
		b.Run("time-"+name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 4))
			f := locFabrics[name].build(rng)
			loss := f.noise(rng)
			loss[f.links[len(f.links)/3]] = 0.02
			loss[f.links[len(f.links)/2]] = 0.01
			routes := f.routes(rng, loss)
			g := New(DefaultConfig())
			for _, r := range routes {
				g.ImportRoute("sim", r)
			}
			b.ReportMetric(float64(len(f.links)), "links")
			b.ReportMetric(float64(len(routes)), "routes")
			// DNMS_BENCH_SNAPSHOT=DIR saves the graph as DIR/<fabric>.json,
			// the input of the end-to-end `dnms health -f` measurement
			// (scripts/bench.sh health).
			if dir := os.Getenv("DNMS_BENCH_SNAPSHOT"); dir != "" {
				saveSnapshot(b, g, filepath.Join(dir, name+".json"))
			}
			runtime.GC() // do not charge the setup's garbage to Health
			b.ResetTimer()
			// The estimator itself (what the cache saves), then what a scrape
			// or API call pays at an unchanged event id: the ratio of the two
			// is the cache's gain, measured in the same run.
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				g.mu.RLock()
				names, in := g.healthInputsLocked(new(healthBuf))
				g.mu.RUnlock()
				localize.RunNumbered(names, in, g.cfg.Health)
			}
			// CPU time (all threads, GC included) is the figure to read on
			// a shared machine, where wall time includes waiting for a core.
			compute := float64((cpuTime() - cpu0).Microseconds()) / float64(b.N)
			b.ReportMetric(compute/1000, "cpu-ms/op")
			g.Health()
			cpu0 = cpuTime()
			const hits = 20
			for i := 0; i < hits; i++ {
				g.Health()
			}
			hit := float64((cpuTime() - cpu0).Microseconds()) / hits
			b.ReportMetric(hit/1000, "cached-cpu-ms/op")
			b.ReportMetric(compute/max(hit, 1), "compute/cached")
		})
	}
}

func saveSnapshot(b *testing.B, g *Graph, path string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(g.Snapshot()); err != nil {
		b.Fatal(err)
	}
}
