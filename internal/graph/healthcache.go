package graph

import (
	"slices"
	"sync"

	"github.com/dnms/dnms/internal/localize"
)

// healthCache holds the health rows of one event id: the estimator runs at
// most once per graph change, however many scrapes and API calls read it.
type healthCache struct {
	mu    sync.Mutex // held while computing, so concurrent readers wait for one run
	valid bool
	id    uint64
	stale uint64 // Graph.staleGen the rows saw
	rows  []LinkHealth
	runs  uint64
}

// Health ranks every link by fault likelihood (see HealthOf) over the
// graph's current routes. The rows are computed at most once per event id
// and cached; each call returns its own copy.
func (g *Graph) Health() []LinkHealth {
	rows, _ := g.HealthAt()
	return rows
}

// HealthAt is Health with the event id the rows describe.
func (g *Graph) HealthAt() ([]LinkHealth, uint64) {
	c := &g.health
	c.mu.Lock()
	defer c.mu.Unlock()
	g.mu.RLock()
	id, stale := g.events.last, g.staleGen
	if c.valid && c.id == id && c.stale == stale {
		g.mu.RUnlock()
		return slices.Clone(c.rows), id
	}
	in := g.healthInputsLocked()
	hc := g.cfg.Health
	g.mu.RUnlock()
	c.rows, c.id, c.stale, c.valid = localize.Run(in, hc), id, stale, true
	c.runs++
	return slices.Clone(c.rows), id
}

// healthRuns is how many times the estimator ran (for tests).
func (g *Graph) healthRuns() uint64 {
	g.health.mu.Lock()
	defer g.health.mu.Unlock()
	return g.health.runs
}

// healthInputsLocked collects the estimator input under the read lock.
// r.hops is never modified after the route is created; the key lists are
// replaced, never modified.
func (g *Graph) healthInputsLocked() []localize.Input {
	in := make([]localize.Input, 0, len(g.routes))
	var ports []uint16
	for _, r := range g.routes {
		var x localize.Input
		x, ports = r.healthInput(ports)
		if g.staleLocked(r) {
			x = withoutEvidence(x)
		}
		in = append(in, x)
	}
	return in
}

// healthInput is inputOf for r under one lock of r.mmu, reading a compact
// imported route's ports (sorted, as its keys are) without building its
// key list.
func (r *routeEntry) healthInput(ports []uint16) (localize.Input, []uint16) {
	r.mmu.Lock()
	defer r.mmu.Unlock()
	m := r.metricsLocked()
	if r.local || r.ports == nil {
		return inputOf(r.hops, r.sortedKeysLocked(), m, ports)
	}
	start := len(ports)
	ports = append(ports, r.ports...)
	return inputWith(r.hops, ports[start:len(ports):len(ports)], m), ports
}
