package graph

import (
	"fmt"
	"math"

	"github.com/dnms/dnms/internal/localize"
)

// healthInputsByName is the estimator input as the graph built it before
// paths were shared, nodes numbered and inputs kept in slots: a walk of
// the route map, each route's metrics copied under its lock, its ports
// copied, its hop names handed over for localize.Run to hash. hops holds
// each route's hop list, as its record did (made before the timing). The
// reference of the health tests and the in-run baseline of
// BenchmarkAggregatorHealth.
func (g *Graph) healthInputsByName(hops map[*routeEntry][]string) []localize.Input {
	g.mu.RLock()
	defer g.mu.RUnlock()
	in := make([]localize.Input, 0, len(g.routes))
	var ports []uint16
	for _, r := range g.routes {
		var x localize.Input
		r.mmu.Lock()
		m := r.metricsLocked()
		if r.local || r.ports == nil {
			x, ports = inputOf(hops[r], r.sortedKeysLocked(), m, ports)
		} else {
			start := len(ports)
			ports = append(ports, r.ports...)
			x = inputWith(hops[r], ports[start:len(ports):len(ports)], &m)
		}
		r.mmu.Unlock()
		in = append(in, x)
	}
	return in
}

// hopLists is every route's hop list, for healthInputsByName.
func (g *Graph) hopLists() map[*routeEntry][]string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make(map[*routeEntry][]string, len(g.routes))
	for _, r := range g.routes {
		out[r] = g.hopListLocked(r)
	}
	return out
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
