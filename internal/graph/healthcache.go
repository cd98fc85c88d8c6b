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
	buf   healthBuf
	// est is the estimator, kept across runs: it reuses the last run's
	// index when only counts changed and starts its fit from the last
	// estimates (localize.Estimator).
	est localize.Estimator
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
	names, in := g.healthInputsLocked(&c.buf)
	hc := g.cfg.Health
	g.mu.RUnlock()
	c.rows, c.id, c.stale, c.valid = c.est.RunNumbered(names, in, hc), id, stale, true
	c.runs++
	return slices.Clone(c.rows), id
}

// healthRuns is how many times the estimator ran (for tests).
func (g *Graph) healthRuns() uint64 {
	g.health.mu.Lock()
	defer g.health.mu.Unlock()
	return g.health.runs
}

// healthBuf holds the pointer-free part of the last run's estimator input
// (the routes' hops as node numbers, the node table), reused by the next
// run under healthCache.mu. The per-route inputs themselves (≈ 128 B a
// route, with pointers) are made per run: kept, they would add a quarter
// to the aggregator's heap and to every GC cycle's marking.
type healthBuf struct {
	names []string
	nodes []int32
}

// healthInputsLocked collects the estimator input under the read lock,
// with the hops as node numbers into names (a copy of the graph's table:
// the run goes on without the lock), both in b. Imported routes come from
// their slots (healthstore.go), in order; local routes (an agent's few
// hundred) from their records. The inputs alias the routes' port and
// excess slices, which are replaced, never modified.
func (g *Graph) healthInputsLocked(b *healthBuf) (names []string, in []localize.Input) {
	b.names = append(b.names[:0], g.nodeNames...)
	in = make([]localize.Input, 0, len(g.routes))
	nodes := slices.Grow(b.nodes[:0], g.hops) // cut, never grown: the inputs alias it
	anyStale := len(g.staleOrigins) > 0       // else no route's record is read
	for i := range g.slots.len() {
		var x localize.Input
		sl := g.slots.at(i)
		x, nodes = sl.input(nodes)
		if anyStale && g.staleLocked(sl.r) {
			x = withoutEvidence(x)
		}
		in = append(in, x)
	}
	if g.slots.len() < len(g.routes) {
		var ports []uint16
		for _, r := range g.routes {
			if !r.local {
				continue
			}
			var x localize.Input
			x, ports = r.healthInput(ports)
			start := len(nodes)
			nodes = r.appendHopNums(nodes)
			x.Nodes = nodes[start:len(nodes):len(nodes)]
			in = append(in, x)
		}
	}
	b.nodes = nodes
	return b.names, in
}

// healthInput is inputOf for a local route, without the hops.
func (r *routeEntry) healthInput(ports []uint16) (localize.Input, []uint16) {
	r.mmu.Lock()
	defer r.mmu.Unlock()
	return inputOf(nil, r.sortedKeysLocked(), r.metricsLocked(), ports)
}
