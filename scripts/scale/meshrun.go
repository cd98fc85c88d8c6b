package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/plan/simclos"
)

// meshCost is what the localization of one route set cost.
type meshCost struct {
	routes, hops int
	build        time.Duration // fabric → estimator input
	inputBytes   uint64        // what the estimator input holds
	draw, rank   time.Duration // per trial, the slowest
	peakRSS      uint64        // process peak RSS over the build and the trials (0: unknown)
}

func (c meshCost) String() string {
	s := fmt.Sprintf("%d routes (%d hops), built in %s, input %.0f MiB; per trial: draw %s, estimator %s",
		c.routes, c.hops, c.build.Round(10*time.Millisecond), float64(c.inputBytes)/(1<<20),
		c.draw.Round(10*time.Millisecond), c.rank.Round(10*time.Millisecond))
	if c.peakRSS > 0 {
		s += fmt.Sprintf("; peak RSS %.1f GiB", float64(c.peakRSS)/(1<<30))
	}
	return s
}

// locFigures are one route set's localization figures per fault count,
// averaged over the trials, and what they cost.
type locFigures struct {
	p1, f1 map[int]float64
	alarms map[int]int
	cost   meshCost
}

// localization scores the estimator on the routes of cp (the sampled plan
// or a full mesh) for 0, 1 and 3 faulty links, trials fault sets each:
// fault set t of k links and its noise are the same for every route set
// of the fabric.
func localization(f *simclos.Fabric, cp clusterPlan, trials int, noise float64) (locFigures, error) {
	fig := locFigures{p1: map[int]float64{}, f1: map[int]float64{}, alarms: map[int]int{}}
	resetPeakRSS := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	t0 := time.Now()
	m, err := newMeshSet(f, cp, 11)
	if err != nil {
		return fig, err
	}
	m.sortByPath()
	fig.cost.build = time.Since(t0)
	fig.cost.routes, fig.cost.hops = len(m.in), m.hops()
	fig.cost.inputBytes = m.bytes()
	n := uint64(len(f.Hosts))
	for _, k := range []int{0, 1, 3} {
		for t := range trials {
			lossy := faults(f, k, 0.05, rand.New(rand.NewPCG(n, uint64(100*k+t))))
			t1 := time.Now()
			m.draw(lossy, background{max: noise, seed: uint64(t)}, 100, rand.New(rand.NewPCG(7, uint64(t))))
			t2 := time.Now()
			rows := m.rank()
			t3 := time.Now()
			fig.cost.draw, fig.cost.rank = max(fig.cost.draw, t2.Sub(t1)), max(fig.cost.rank, t3.Sub(t2))
			p1, f1, alarms := score(rows, lossy)
			fig.p1[k] += p1 / float64(trials)
			fig.f1[k] += f1 / float64(trials)
			fig.alarms[k] += alarms
		}
	}
	if resetPeakRSS {
		fig.cost.peakRSS = procStatus("VmHWM")
	}
	runtime.KeepAlive(m)
	return fig, nil
}

// printLocalization runs and prints the localization figures: the sampled
// plan's, and a full mesh's on the same fault sets when the fabric has at
// most fullMeshMax hosts.
func printLocalization(f *simclos.Fabric, members []plan.Member, pc plan.Config, sampled clusterPlan, now time.Time, trials, fullMeshMax int, noise float64) error {
	if trials < 1 {
		return nil
	}
	s, err := localization(f, sampled, trials, noise)
	if err != nil {
		return err
	}
	var full *locFigures
	routes := meshRoutesEstimate(f)
	// A full mesh that cannot fit in the machine's memory is not tried.
	need, total := routes*meshPeakBytes, memTotal()
	fits := total == 0 || need < float64(total)
	if len(f.Hosts) <= fullMeshMax && fits {
		fc := pc
		fc.Budget = 0
		b, err := localization(f, planAll(f, members, fc, now), trials, noise)
		if err != nil {
			return err
		}
		full = &b
	}
	for _, k := range []int{0, 1, 3} {
		var line string
		if k == 0 {
			line = fmt.Sprintf("  localization, healthy fabric, %d trials: sampled %d faulty/suspect verdicts", trials, s.alarms[0])
			if full != nil {
				line += fmt.Sprintf("; full mesh %d", full.alarms[0])
			}
		} else {
			line = fmt.Sprintf("  localization, %d faulty link(s), %d trials: sampled precision@1 %.2f F1 %.2f", k, trials, s.p1[k], s.f1[k])
			if full != nil {
				line += fmt.Sprintf("; full mesh precision@1 %.2f F1 %.2f", full.p1[k], full.f1[k])
				if s.p1[k] < 0.95 || s.f1[k] < full.f1[k]-0.02 {
					line += " (misses the goal: sampled precision@1 ≥ 0.95, F1 within 0.02 of full mesh)"
				}
			}
		}
		switch {
		case full != nil:
		case len(f.Hosts) > fullMeshMax:
			line += fmt.Sprintf("; full mesh not computed (N > -fullMeshMax; ≈ %.1f M routes, ≈ %.0f GiB)", routes/1e6, need/(1<<30))
		default:
			line += fmt.Sprintf("; full mesh not computed: ≈ %.1f M routes need ≈ %.0f GiB (%.0f B a route), the machine has %.0f GiB",
				routes/1e6, need/(1<<30), meshPeakBytes, float64(total)/(1<<30))
		}
		fmt.Println(line)
	}
	fmt.Printf("  localization cost, sampled: %s\n", s.cost)
	if full != nil {
		fmt.Printf("  localization cost, full mesh: %s\n", full.cost)
	}
	return nil
}

// meshPeakBytes is the process's peak RSS per full-mesh route, measured
// at N = 1 000 (9.1 M routes, 5.9 GiB, ≈ 0.5 GiB of it there before): the
// estimator input (≈ 205 B a route) and the estimator's own arrays.
const meshPeakBytes = 650.0

// memTotal is the machine's memory in bytes, 0 when unknown.
func memTotal() uint64 {
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) != nil {
		return 0
	}
	return si.Totalram * uint64(si.Unit)
}

// meshRoutesEstimate is the expected number of distinct routes of a full
// mesh over 11 source ports, if ECMP spread the ports uniformly: a pair
// with k equal-cost paths has k(1 − (1 − 1/k)¹¹) of them.
func meshRoutesEstimate(f *simclos.Fabric) float64 {
	distinct := func(k int) float64 { return float64(k) * (1 - math.Pow(1-1/float64(k), 11)) }
	hosts, racks := len(f.Hosts), len(f.ToRAddr)
	perRack := hosts / max(racks, 1)
	sameRack := float64(hosts * (perRack - 1))
	if f.Pods == 0 {
		return sameRack + float64(hosts*(hosts-perRack))*distinct(len(f.Spine))
	}
	perPod := hosts / max(len(f.AggAddr), 1)
	aggs := len(f.AggAddr[0])
	return sameRack + float64(hosts*(perPod-perRack))*distinct(aggs) +
		float64(hosts*(hosts-perPod))*distinct(aggs*len(f.Spine)*aggs)
}
