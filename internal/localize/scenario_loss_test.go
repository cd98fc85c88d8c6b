package localize

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// smallFabric: 4 spines × 8 leaves × 4 hosts: 64 leaf–spine and 64 host
// links.
func smallFabric() *fabric { return newFabric(4, 8, 4) }

type lossScenario struct {
	name string
	hz   hazards
	// fault picks the faulty links and sets them in w; it returns the
	// links a perfect estimator would flag. A vanished host's access links
	// and silent placeholders may be flagged without counting as false.
	fault        func(rng *rand.Rand, f *fabric, w *world) (truth map[link]bool)
	minPrecision float64
	minRecall    float64
	// eitherDirection: a truth link is found when it or its reverse is
	// flagged. A router dropping on all its out-links explains the data
	// exactly as well as one dropping on all its in-links (every path
	// through the router crosses one of each).
	eitherDirection bool
}

// oneLink faults one random leaf–spine link with loss p (either direction).
func oneLink(p float64) func(*rand.Rand, *fabric, *world) map[link]bool {
	return func(rng *rand.Rand, f *fabric, w *world) map[link]bool {
		fl, _ := f.links()
		l := fl[rng.IntN(len(fl))]
		w.loss[l] = p
		return map[link]bool{l: true}
	}
}

func withHazard(h func(*hazards)) hazards {
	hz := defaultHazards
	h(&hz)
	return hz
}

var lossScenarios = []lossScenario{
	{name: "one link at 2%", hz: defaultHazards, fault: oneLink(0.02), minPrecision: 0.95, minRecall: 0.95},
	{name: "one link at 0.5%", hz: withHazard(func(h *hazards) { h.samples = 300 }), fault: oneLink(0.005), minPrecision: 0.9, minRecall: 0.9},
	{name: "dead link (100%)", hz: defaultHazards, fault: oneLink(1), minPrecision: 1, minRecall: 1},
	{name: "one direction only, other direction clean", hz: defaultHazards, fault: func(rng *rand.Rand, f *fabric, w *world) map[link]bool {
		l := link{f.leaf[rng.IntN(f.leaves)], f.spine[rng.IntN(f.spines)]}
		w.loss[l] = 0.03
		return map[link]bool{l: true}
	}, minPrecision: 0.95, minRecall: 0.95},
	{name: "router dropping on all its links", hz: defaultHazards, fault: func(rng *rand.Rand, f *fabric, w *world) map[link]bool {
		s := f.spine[rng.IntN(f.spines)]
		w.routerLoss[s] = 0.02
		truth := map[link]bool{}
		for _, lf := range f.leaf {
			truth[link{s, lf}] = true
		}
		return truth
	}, minPrecision: 0.95, minRecall: 0.8, eitherDirection: true},
	{name: "30% of routes missing (reverses unknown)", hz: withHazard(func(h *hazards) { h.missingRoute = 0.3 }), fault: oneLink(0.03), minPrecision: 0.9, minRecall: 0.9},
	{name: "10% silent hops", hz: withHazard(func(h *hazards) { h.silentHop = 0.1 }), fault: oneLink(0.03), minPrecision: 0.8, minRecall: 0.9},
	{name: "20% of keys changed path mid-window", hz: withHazard(func(h *hazards) { h.changed = 0.2 }), fault: oneLink(0.03), minPrecision: 0.8, minRecall: 0.9},
	{name: "10% of keys on an unseen ECMP path", hz: withHazard(func(h *hazards) { h.unseen = 0.1 }), fault: oneLink(0.03), minPrecision: 0.8, minRecall: 0.9},
	{name: "two vanished agents", hz: withHazard(func(h *hazards) { h.vanished = 2 }), fault: oneLink(0.03), minPrecision: 0.9, minRecall: 0.9},
	{name: "three concurrent faults", hz: defaultHazards, fault: func(rng *rand.Rand, f *fabric, w *world) map[link]bool {
		fl, hl := f.links()
		truth := map[link]bool{}
		for len(truth) < 2 {
			l := fl[rng.IntN(len(fl))]
			truth[l] = true
			w.loss[l] = 0.01 + 0.04*rng.Float64()
		}
		l := hl[rng.IntN(len(hl))]
		truth[l] = true
		w.loss[l] = 0.03
		return truth
	}, minPrecision: 0.9, minRecall: 0.9},
}

// TestScenariosLoss runs every scenario over seeds on a small fabric and
// asserts its precision and recall floors (over all seeds together).
func TestScenariosLoss(t *testing.T) {
	seeds := 8
	if testing.Short() {
		seeds = 2 // the -race unit tier; the full floors need 8
	}
	f := smallFabric()
	for _, sc := range lossScenarios {
		t.Run(sc.name, func(t *testing.T) {
			var tp, fp, fn int
			for seed := 0; seed < seeds; seed++ {
				rng := rand.New(rand.NewPCG(uint64(seed), 77))
				w := &world{loss: f.noise(rng, sc.hz.noiseMax), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
				truth := sc.fault(rng, f, w)
				rows := Run(f.generate(rng, w, sc.hz), Config{})
				_, _, _, flagged := score(rows, VerdictFaulty, truth)
				match := func(l link) bool { return truth[l] || sc.eitherDirection && truth[link{l[1], l[0]}] }
				for _, l := range flagged {
					switch {
					case match(l):
						tp++
					case sc.hz.vanished > 0 && isAccess(l), strings.HasPrefix(l[1], "*"), strings.HasPrefix(l[0], "*"):
						// a vanished host's access link, or a silent
						// placeholder on a faulty path: neither counts
					default:
						fp++
						t.Logf("seed %d: false faulty %v", seed, l)
					}
				}
				for l := range truth {
					if !flaggedHas(flagged, l) && !(sc.eitherDirection && flaggedHas(flagged, link{l[1], l[0]})) {
						fn++
						t.Logf("seed %d: missed %v (loss %.3f)", seed, l, w.loss[l])
					}
				}
			}
			prec, rec := ratio(float64(tp), float64(tp+fp)), ratio(float64(tp), float64(tp+fn))
			t.Logf("precision %.2f recall %.2f (tp %d fp %d fn %d over %d seeds)", prec, rec, tp, fp, fn, seeds)
			if prec < sc.minPrecision || rec < sc.minRecall {
				t.Errorf("precision %.2f (floor %.2f), recall %.2f (floor %.2f)", prec, sc.minPrecision, rec, sc.minRecall)
			}
		})
	}
}

func isAccess(l link) bool {
	return strings.HasPrefix(l[0], "198.18.") || strings.HasPrefix(l[1], "198.18.")
}

func flaggedHas(ls []link, l link) bool {
	for _, x := range ls {
		if x == l {
			return true
		}
	}
	return false
}

// TestScenarioHealthy: a healthy fabric with every hazard but faults gets
// no faulty and no slow verdict over 100 seeds, with the noisiest time
// source.
func TestScenarioHealthy(t *testing.T) {
	seeds := 100
	if testing.Short() {
		seeds = 9 // the -race unit tier; the 100 seeds run without -short
	}
	f := smallFabric()
	hz := withHazard(func(h *hazards) {
		h.silentHop, h.missingRoute, h.changed, h.unseen = 0.05, 0.05, 0.05, 0.05
	})
	for seed := 0; seed < seeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 99))
		src := []timeSource{srcEBPF, srcKernel, srcUser}[seed%3]
		w := &world{loss: f.noise(rng, hz.noiseMax), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: src}
		for _, r := range Run(f.generate(rng, w, hz), Config{}) {
			if r.Verdict == VerdictFaulty || r.Verdict == VerdictSlow {
				t.Errorf("seed %d (%s): %s→%s %s: %s (delay %.1f µs)", seed, src.name, r.Src, r.Dst, r.Verdict, r.Evidence, 1e6*r.EstimatedDelaySeconds)
			}
		}
	}
}
