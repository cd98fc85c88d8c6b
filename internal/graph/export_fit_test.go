package graph

import "github.com/dnms/dnms/internal/localize"

// ColdHealth drops g's cached health rows and what its estimator kept of
// the last run, so the next Health runs as the first one did.
func ColdHealth(g *Graph) {
	g.health.mu.Lock()
	g.health.valid = false
	g.health.est = localize.Estimator{}
	g.health.mu.Unlock()
}

// HealthEstimatorStats is g's estimator's Stats.
func HealthEstimatorStats(g *Graph) (runs, reused, warm, lastSweeps int) {
	g.health.mu.Lock()
	defer g.health.mu.Unlock()
	return g.health.est.Stats()
}

// CPUTime is cpuTime: the process's CPU time so far.
var CPUTime = cpuTime
