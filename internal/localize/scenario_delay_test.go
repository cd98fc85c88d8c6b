package localize

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// slowRun puts delay d on one random fabric link and returns the rows and
// the link.
func slowRun(seed uint64, f *fabric, src timeSource, d float64, hz hazards) ([]Row, link) {
	rng := rand.New(rand.NewPCG(seed, 1234))
	w := &world{loss: f.noise(rng, hz.noiseMax), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: src}
	fl, _ := f.links()
	l := fl[rng.IntN(len(fl))]
	w.delay[l] = d
	return Run(f.generate(rng, w, hz), Config{}), l
}

// silent says a row's link touches a silent hop's placeholder: a link
// that hides its name (the slow link behind a "*" can only be named as the
// placeholder's link on that one route).
func silent(r Row) bool { return strings.HasPrefix(r.Src, "*") || strings.HasPrefix(r.Dst, "*") }

// topByDelay is the named link with the largest estimated delay, then
// delay seed score (SortByEstimate's order among links of one verdict and
// no loss).
func topByDelay(rows []Row) link {
	rows = slices.DeleteFunc(slices.Clone(rows), silent)
	r := slices.MaxFunc(rows, func(a, b Row) int {
		if c := cmp.Compare(a.EstimatedDelaySeconds, b.EstimatedDelaySeconds); c != 0 {
			return c
		}
		return cmp.Compare(a.DelayExcessSeconds, b.DelayExcessSeconds) // as SortByEstimate
	})
	return link{r.Src, r.Dst}
}

// TestScenarioSlowLink: 1 ms on one direction of one leaf–spine link is the
// only slow link and the top one by estimated delay, with every time
// source, also with silent hops and missing routes; 200 µs with the eBPF
// and kernel sources.
func TestScenarioSlowLink(t *testing.T) {
	f := smallFabric()
	seeds := 4
	if testing.Short() {
		seeds = 1
	}
	hazy := withHazard(func(h *hazards) { h.silentHop, h.missingRoute, h.changed = 0.05, 0.1, 0.05 })
	cases := []struct {
		src   timeSource
		delay float64
		hz    hazards
	}{
		{srcEBPF, 1e-3, defaultHazards},
		{srcKernel, 1e-3, defaultHazards},
		{srcUser, 1e-3, defaultHazards},
		{srcUser, 1e-3, hazy},
		{srcEBPF, 200e-6, defaultHazards},
		{srcKernel, 200e-6, hazy},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%d/%s/%.0fus", i, tc.src.name, tc.delay*1e6), func(t *testing.T) {
			for seed := uint64(0); seed < uint64(seeds); seed++ {
				rows, l := slowRun(seed, f, tc.src, tc.delay, tc.hz)
				var slow []link
				for _, r := range rows {
					if r.Verdict == VerdictSlow && !silent(r) {
						slow = append(slow, link{r.Src, r.Dst})
					}
					if r.Verdict == VerdictFaulty {
						t.Errorf("seed %d: %s→%s faulty on a loss-free fault", seed, r.Src, r.Dst)
					}
				}
				if len(slow) != 1 || slow[0] != l {
					t.Errorf("seed %d: slow %v, want only %v", seed, slow, l)
				}
				if top := topByDelay(rows); top != l {
					t.Errorf("seed %d: top by estimated delay %v, want %v", seed, top, l)
				}
				for _, r := range rows {
					if (link{r.Src, r.Dst}) == l && (r.EstimatedDelaySeconds < tc.delay/2 || r.EstimatedDelaySeconds > 2*tc.delay) {
						t.Errorf("seed %d: estimated %.0f µs for %.0f µs", seed, 1e6*r.EstimatedDelaySeconds, 1e6*tc.delay)
					}
				}
			}
		})
	}
}
