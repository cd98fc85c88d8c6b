package graph

import "github.com/dnms/dnms/internal/localize"

// Hooks for the external benchmarks (aggscale_bench_test.go).

// HealthByName returns a ranking of g's links from inputs built by name
// (healthInputsByName), bypassing the cache: the routes' hop lists are
// made now, each run is timed without them.
func HealthByName(g *Graph) func() []localize.Row {
	hops := g.hopLists()
	return func() []localize.Row { return localize.Run(g.healthInputsByName(hops), g.cfg.Health) }
}

// ForgetHealth drops g's cached health rows, so the next Health computes.
func ForgetHealth(g *Graph) {
	g.health.mu.Lock()
	g.health.valid = false
	g.health.mu.Unlock()
}

// SameRanking is sameRanking for the external benchmarks.
func SameRanking(got, want []LinkHealth) error { return sameRanking(got, want) }

// HeapNow is heapNow: the live heap after two GCs.
var HeapNow = heapNow
