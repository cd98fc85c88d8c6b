package graph

import (
	"fmt"
	"math"

	"github.com/dnms/dnms/internal/localize"
)

// healthInputsByName is the estimator input as the graph built it before
// paths were shared and nodes numbered: every route's hop names, its ports
// copied, fresh slices on every run; localize.Run then hashes the names.
// The reference of TestHealthNumberedMatchesNames and the baseline of
// BenchmarkAggregatorHealth.
func (g *Graph) healthInputsByName() []localize.Input {
	g.mu.RLock()
	defer g.mu.RUnlock()
	in := make([]localize.Input, 0, len(g.routes))
	var ports []uint16
	for _, r := range g.routes {
		var x localize.Input
		x, ports = inputOf(g.hopListLocked(r), r.keysOf(), r.metricsOf(), ports)
		in = append(in, x)
	}
	return in
}

// sameRanking reports whether two health rankings of the same routes
// agree: the same links with the same verdicts and counts, and every
// figure equal up to summation order (the estimator sums and splits lost
// probes by direction in input order, and two walks of the route map
// differ, which may also swap rows whose scores tie). The exact check of
// the numbering is TestHealthNumberedMatchesNames, over one walk.
func sameRanking(got, want []LinkHealth) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d rows, want %d", len(got), len(want))
	}
	close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-6*max(math.Abs(a), math.Abs(b), 1e-12) }
	near := func(a, b int) bool { return math.Abs(float64(a-b)) <= 1e-3*float64(max(a, b, 1)) }
	byLink := make(map[LinkID]LinkHealth, len(want))
	for _, r := range want {
		byLink[LinkID{Src: r.Src, Dst: r.Dst}] = r
	}
	for i := range got {
		a := got[i]
		b, ok := byLink[LinkID{Src: a.Src, Dst: a.Dst}]
		if !ok {
			return fmt.Errorf("row %d: link %s→%s not in the reference", i, a.Src, a.Dst)
		}
		if a.Verdict != b.Verdict || a.RoutesThrough != b.RoutesThrough || a.RoutesNotThrough != b.RoutesNotThrough ||
			!near(a.SamplesThrough, b.SamplesThrough) || !near(a.SamplesNotThrough, b.SamplesNotThrough) ||
			!close(a.Suspicion, b.Suspicion) || !close(a.EstimatedLoss, b.EstimatedLoss) || !close(a.LossPValue, b.LossPValue) ||
			!close(a.DelayExcessSeconds, b.DelayExcessSeconds) || !close(a.EstimatedDelaySeconds, b.EstimatedDelaySeconds) {
			return fmt.Errorf("row %d: %+v, want %+v", i, a, b)
		}
	}
	return nil
}
