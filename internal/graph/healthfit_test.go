package graph_test

import (
	"math/rand/v2"
	"testing"

	"github.com/dnms/dnms/internal/graph"
)

// TestHealthWarmClearsHealedLink: the health cache's estimator, kept
// across runs (warm start, index reused), on the scale harness's routes
// at N=100 imported as the aggregator imports them: a link at 5% loss is
// faulty; once it heals, the windows turn over (20 of 100 samples a
// batch) and the link is ok in the same batch as a cold run says so. At
// every batch the warm ranking has the cold run's verdicts and estimates
// within 2 lost probes (or 0.025%), and the warm runs reuse the index.
func TestHealthWarmClearsHealedLink(t *testing.T) {
	routes := harnessRoutes(100)
	rng := rand.New(rand.NewPCG(9, 9))
	g := importHarness(routes, rng, false)
	w := newLossWorld(routes)
	bad := graph.LinkID{Src: routes[0].hops[1], Dst: routes[0].hops[2]}
	w.loss[[2]string{bad.Src, bad.Dst}] = 0.05
	w.batch(g, routes, rng, 0)
	cold := graph.HealthByName(g)
	verdict := func(rows []graph.LinkHealth) graph.Verdict {
		for _, r := range rows {
			if r.Src == bad.Src && r.Dst == bad.Dst {
				return r.Verdict
			}
		}
		return ""
	}
	if v := verdict(g.Health()); v != graph.VerdictFaulty {
		t.Fatalf("%v at 5%% loss: %s, want faulty", bad, v)
	}
	w.loss[[2]string{bad.Src, bad.Dst}] = 0
	cleared := -1
	for i := 0; i < 6; i++ {
		w.batch(g, routes, rng, 20)
		graph.ForgetHealth(g) // metrics-only updates may be held back
		warm := g.Health()
		ref := cold()
		if err := sameVerdicts(warm, ref, 2); err != nil {
			t.Fatalf("batch %d after healing: warm vs cold: %v", i, err)
		}
		if vw := verdict(warm); vw == graph.VerdictOK && cleared < 0 {
			cleared = i
		}
	}
	runs, reused, warmRuns, _ := graph.HealthEstimatorStats(g)
	t.Logf("cleared at batch %d after healing; %d runs, %d reused the index, %d warm", cleared, runs, reused, warmRuns)
	if cleared < 0 || cleared > 4 {
		t.Errorf("healed link cleared at batch %d, want by batch 4 (its losses leave the window then)", cleared)
	}
	if reused != runs-1 || warmRuns != runs-1 {
		t.Errorf("%d runs: %d reused the index, %d started warm, want %d each", runs, reused, warmRuns, runs-1)
	}
}
