package localize

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// numbered gives in's routes as node numbers into a names table (the
// graph's way), dropping their Hops.
func numbered(in []Input) (names []string, out []Input) {
	num := map[string]int32{}
	out = make([]Input, len(in))
	for i, r := range in {
		r.Nodes = make([]int32, len(r.Hops))
		for j, h := range r.Hops {
			n, ok := num[h]
			if !ok {
				n = int32(len(names))
				num[h] = n
				names = append(names, h)
			}
			r.Nodes[j] = n
		}
		r.Hops = nil
		out[i] = r
	}
	return names, out
}

// redraw is a new window of probes on the same routes (same hops, ports,
// samples) in world w: forward losses over the route's hops, reverse
// losses over its reverse route's (the route back with the same first
// port, when the set has it), a tenth of the losses of unknown
// direction, and no per-key counts.
func redraw(in []Input, hops [][]string, w *world, rng *rand.Rand) []Input {
	back := map[string]int{}
	key := func(src, dst string, port uint16) string { return fmt.Sprint(src, "|", dst, "|", port) }
	for i, h := range hops {
		for _, p := range in[i].Ports {
			back[key(h[0], h[len(h)-1], p)] = i
		}
	}
	out := make([]Input, len(in))
	for i, r := range in {
		r.Lost, r.LostForward, r.LostReverse = 0, 0, 0
		r.SamplesByKey, r.LostByKey = nil, nil
		h := hops[i]
		okF, okR := w.success(h), 1.0
		if j, ok := back[key(h[len(h)-1], h[0], r.Ports[0])]; ok {
			okR = w.success(hops[j])
		}
		for range r.Samples {
			lf := rng.Float64() >= okF
			lr := !lf && rng.Float64() >= okR
			if !lf && !lr {
				continue
			}
			r.Lost++
			switch {
			case rng.Float64() < 0.1:
			case lf:
				r.LostForward++
			default:
				r.LostReverse++
			}
		}
		out[i] = r
	}
	return out
}

// sameAnswers checks that warm rows give cold's verdicts and, for every
// link, an estimated loss within tol lost probes over the link's samples
// (the fit's own stopping rule is a twentieth of a probe per sweep).
func sameAnswers(warm, cold []Row, tol float64) error {
	if len(warm) != len(cold) {
		return fmt.Errorf("%d rows warm, %d cold", len(warm), len(cold))
	}
	byLink := map[link]Row{}
	for _, r := range cold {
		byLink[link{r.Src, r.Dst}] = r
	}
	for _, w := range warm {
		c, ok := byLink[link{w.Src, w.Dst}]
		if !ok {
			return fmt.Errorf("%s→%s: no cold row", w.Src, w.Dst)
		}
		if w.Verdict != c.Verdict {
			return fmt.Errorf("%s→%s: %s warm, %s cold (estimates %.5f, %.5f)", w.Src, w.Dst, w.Verdict, c.Verdict, w.EstimatedLoss, c.EstimatedLoss)
		}
		if d := math.Abs(w.EstimatedLoss-c.EstimatedLoss) * float64(max(c.SamplesThrough, 1)); d > tol {
			return fmt.Errorf("%s→%s: estimated loss %.6f warm, %.6f cold (%.2f probes over %d samples)", w.Src, w.Dst, w.EstimatedLoss, c.EstimatedLoss, d, c.SamplesThrough)
		}
		if w.Suspicion != c.Suspicion || w.EstimatedDelaySeconds != c.EstimatedDelaySeconds {
			return fmt.Errorf("%s→%s: seed or delay differ", w.Src, w.Dst)
		}
	}
	return nil
}

// TestEstimatorWarmMatchesCold runs every loss scenario as an aggregator
// sees it, a sequence of windows through one Estimator: the scenario's
// window, a new window of the same world, the fault healed, a fault
// elsewhere, then a different route set (other peers) and the first
// window again. Each warm run gives the verdicts of a cold run of the
// same window, and estimates within 2 lost probes over the link's samples;
// the runs on unchanged routes reuse the index.
//
// The exception is a router dropping on all its links: every path through
// it crosses one of its in-links and one of its out-links, so any split of
// the losses between the two sides explains the data equally well, and a
// warm fit keeps its last split where a cold one makes its own. There the
// warm runs must flag the router's links (either direction) as well as
// cold ones: at the scenario's precision floor, with at least 90% of
// cold's true faulty verdicts.
func TestEstimatorWarmMatchesCold(t *testing.T) {
	seeds := 4
	if testing.Short() {
		seeds = 1
	}
	f := smallFabric()
	for _, sc := range lossScenarios {
		t.Run(sc.name, func(t *testing.T) {
			var tp, fp, coldTP int
			for seed := 0; seed < seeds; seed++ {
				rng := rand.New(rand.NewPCG(uint64(seed), 77))
				w := &world{loss: f.noise(rng, sc.hz.noiseMax), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
				healthy := &world{loss: f.noise(rng, sc.hz.noiseMax), routerLoss: map[string]float64{}, delay: map[link]float64{}}
				truth := sc.fault(rng, f, w)
				other := &world{loss: healthy.loss, routerLoss: map[string]float64{}, delay: map[link]float64{}}
				other.loss = map[link]float64{}
				for l, p := range healthy.loss {
					other.loss[l] = p
				}
				oneLink(0.03)(rng, f, other)
				first := f.generate(rng, w, sc.hz)
				hops := make([][]string, len(first))
				for i, r := range first {
					hops[i] = r.Hops
				}
				second := f.generate(rand.New(rand.NewPCG(uint64(seed), 78)), w, sc.hz)
				windows := []struct {
					name  string
					in    []Input
					reuse bool
				}{
					{"first", first, false},
					{"same world", redraw(first, hops, w, rng), true},
					{"healed", redraw(first, hops, healthy, rng), true},
					{"fault elsewhere", redraw(first, hops, other, rng), true},
					{"other peers", second, false},
					{"first again", first, false},
				}
				var e Estimator
				for _, win := range windows {
					names, in := numbered(win.in)
					_, reused0, _, _ := e.Stats()
					warm := e.RunNumbered(names, in, Config{})
					cold := RunNumbered(names, in, Config{})
					if sc.eitherDirection {
						// Not identifiable: see the comment above.
						if win.name != "healed" && win.name != "fault elsewhere" {
							_, _, _, fl := score(warm, VerdictFaulty, truth)
							for _, l := range fl {
								if truth[l] || truth[link{l[1], l[0]}] {
									tp++
								} else {
									fp++
								}
							}
							_, _, _, fl = score(cold, VerdictFaulty, truth)
							for _, l := range fl {
								if truth[l] || truth[link{l[1], l[0]}] {
									coldTP++
								}
							}
						}
					} else if err := sameAnswers(warm, cold, 2); err != nil {
						t.Errorf("seed %d, %s: %v", seed, win.name, err)
					}
					// numbered() numbers names anew per window, so the
					// index is reused only within one route set.
					if _, reused, _, _ := e.Stats(); (reused > reused0) != win.reuse {
						t.Errorf("seed %d, %s: index reused %v, want %v", seed, win.name, reused > reused0, win.reuse)
					}
				}
			}
			if sc.eitherDirection {
				prec := ratio(float64(tp), float64(tp+fp))
				t.Logf("warm: %d true (cold %d), %d false faulty verdicts", tp, coldTP, fp)
				if prec < sc.minPrecision || float64(tp) < 0.9*float64(coldTP) {
					t.Errorf("warm: precision %.2f (floor %.2f), %d true faulty verdicts (cold %d)", prec, sc.minPrecision, tp, coldTP)
				}
			}
		})
	}
}

// TestEstimatorClearsHealedLink: a link faulty in one window is ok in the
// first window without its losses, warm as cold, for a fault that stops
// at once and for one that fades over two windows (the ring turning
// over); the estimate comes back to what a cold run gives.
func TestEstimatorClearsHealedLink(t *testing.T) {
	f := smallFabric()
	for seed := 0; seed < 6; seed++ {
		for _, steps := range [][]float64{{0.05, 0}, {0.05, 0.025, 0}, {1, 0}, {0.02, 0.02, 0, 0.02, 0}} {
			rng := rand.New(rand.NewPCG(uint64(seed), 5))
			w := &world{loss: f.noise(rng, 1e-4), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
			fl, _ := f.links()
			bad := fl[rng.IntN(len(fl))]
			in := f.generate(rng, w, defaultHazards)
			hops := make([][]string, len(in))
			for i, r := range in {
				hops[i] = r.Hops
			}
			var e Estimator
			for i, p := range steps {
				w.loss[bad] = p
				names, x := numbered(redraw(in, hops, w, rng))
				warm := e.RunNumbered(names, x, Config{})
				cold := RunNumbered(names, x, Config{})
				vw, vc := verdictOf(warm, bad), verdictOf(cold, bad)
				if vw != vc {
					t.Errorf("seed %d, losses %v, window %d: %v is %s warm, %s cold", seed, steps, i, bad, vw, vc)
				}
				if p == 0 && vw != VerdictOK {
					t.Errorf("seed %d, losses %v, window %d: healed %v still %s", seed, steps, i, bad, vw)
				}
				if p >= 0.02 && vw != VerdictFaulty {
					t.Errorf("seed %d, losses %v, window %d: %v at %.0f%% is %s", seed, steps, i, bad, 100*p, vw)
				}
				if err := sameAnswers(warm, cold, 1); err != nil {
					t.Errorf("seed %d, losses %v, window %d: %v", seed, steps, i, err)
				}
			}
		}
	}
}

func verdictOf(rows []Row, l link) Verdict {
	i := slices.IndexFunc(rows, func(r Row) bool { return r.Src == l[0] && r.Dst == l[1] })
	if i < 0 {
		return ""
	}
	return rows[i].Verdict
}

// oneFaultWindow is a window of the small fabric, drawn from seed, with
// background noise and leaf–spine link number fault at loss p, numbered.
func oneFaultWindow(seed uint64, fault int, p float64) (*fabric, []link, *rand.Rand, []string, []Input) {
	f := smallFabric()
	rng := rand.New(rand.NewPCG(seed, seed))
	w := &world{loss: f.noise(rng, 1e-4), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
	fl, _ := f.links()
	w.loss[fl[fault]] = p
	names, in := numbered(f.generate(rng, w, defaultHazards))
	return f, fl, rng, names, in
}

// TestEstimatorRenamedNodes: the same node numbers naming other nodes
// (the graph reuses a gone node's number) are other routes: the index is
// rebuilt, and the rows are a cold run's. The same names table with a
// new, unused entry appended is the same routes: the index is reused.
func TestEstimatorRenamedNodes(t *testing.T) {
	f, fl, _, names, in := oneFaultWindow(1, 3, 0.05)
	var e Estimator
	e.RunNumbered(names, in, Config{})

	grown := append(slices.Clip(names), "198.18.99.99")
	e.RunNumbered(grown, in, Config{})
	if _, reused, _, _ := e.Stats(); reused != 1 {
		t.Fatalf("an unused name appended: index reused %d times, want 1", reused)
	}

	renamed := slices.Clone(names)
	i := slices.Index(renamed, fl[3][0])
	j := slices.Index(renamed, f.spine[0])
	if fl[3][0] == f.spine[0] {
		j = slices.Index(renamed, f.spine[1])
	}
	renamed[i], renamed[j] = renamed[j], renamed[i]
	warm := e.RunNumbered(renamed, in, Config{})
	if _, reused, _, _ := e.Stats(); reused != 1 {
		t.Errorf("two nodes' names swapped: index reused (%d reuses)", reused)
	}
	if err := sameAnswers(warm, RunNumbered(renamed, in, Config{}), 2); err != nil {
		t.Error(err)
	}
}

// TestPatchIndexMatchesIndexLinks: routes leaving (swap-deleted, as the
// graph's slot table does), coming back (appended) and moving give the
// index indexLinks builds, patched from the last run's; a route over a new
// link, or the last route over a link leaving, gives none (built anew).
// Every run's rows are a cold run's.
func TestPatchIndexMatchesIndexLinks(t *testing.T) {
	_, _, rng, names, in := oneFaultWindow(4, 5, 0.03)
	swapDelete := func(in []Input, k int) ([]Input, []Input) {
		out := slices.Clone(in)
		var gone []Input
		for range k {
			i := rng.IntN(len(out))
			gone = append(gone, out[i])
			out[i] = out[len(out)-1]
			out = out[:len(out)-1]
		}
		return out, gone
	}
	less, gone := swapDelete(in, 20)
	back := append(slices.Clone(less), gone...)
	less2, _ := swapDelete(back, 20)
	// A route over a link no route crossed: host → its leaf → another host's leaf.
	odd := slices.Clone(back)
	r := odd[0]
	r.Nodes = slices.Clone(r.Nodes)
	r.Nodes[len(r.Nodes)-1] = r.Nodes[0]
	odd[0] = r
	// Without every route over the first route's first link.
	first := in[0].Nodes[:2]
	var without []Input
	for _, r := range in {
		if !(len(r.Nodes) >= 2 && slices.Index(r.Nodes, first[0]) >= 0 && slices.Index(r.Nodes, first[0])+1 < len(r.Nodes) && r.Nodes[slices.Index(r.Nodes, first[0])+1] == first[1]) {
			without = append(without, r)
		}
	}
	var e Estimator
	e.RunNumbered(names, in, Config{})
	for _, step := range []struct {
		name  string
		in    []Input
		patch bool
	}{
		{"20 routes swap-deleted", less, true},
		{"they come back, appended", back, true},
		{"a route over a new link", odd, false},
		{"back again: the new link is no longer crossed", back, false},
		{"20 other routes swap-deleted", less2, true},
		{"a link no longer crossed", without, false},
		{"all routes", in, false}, // the link is back: a new link for the last run
	} {
		want := indexLinks(step.in, names)
		if got := e.patchIndex(step.in, names); (got != nil) != step.patch {
			t.Errorf("%s: patched %v, want %v", step.name, got != nil, step.patch)
		} else if got != nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%s: patched index differs from indexLinks", step.name)
		}
		if err := sameAnswers(e.RunNumbered(names, step.in, Config{}), RunNumbered(names, step.in, Config{}), 2); err != nil {
			t.Errorf("%s: %v", step.name, err)
		}
	}
}
