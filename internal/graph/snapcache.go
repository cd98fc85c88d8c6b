package graph

import (
	"slices"
	"sync"
	"sync/atomic"
)

// snapCache holds the snapshot of one graph state, as healthCache holds
// the health rows of one event id: the graph is copied at most once per
// change, however many API calls and scrapes read it, and concurrent
// readers of a new state wait for one copy.
//
// A state is the event id and the change count (Graph.gen): metrics that
// coalescing holds back change the routes without an event, and Snapshot
// has always shown them.
type snapCache struct {
	mu   sync.Mutex // held while copying
	cur  atomic.Pointer[snapEntry]
	runs atomic.Uint64
}

type snapEntry struct {
	id, gen uint64
	snap    *Snapshot
}

func (e *snapEntry) at(id, gen uint64) bool { return e != nil && e.id == id && e.gen == gen }

// SnapshotView is Snapshot without the copy: the graph's current snapshot,
// shared by every caller until the graph changes. Callers must not modify
// it, nor any slice in it. It is computed at most once per change (event
// or held-back metrics); concurrent callers share one computation.
func (g *Graph) SnapshotView() *Snapshot {
	c := &g.snaps
	g.mu.RLock()
	id, gen := g.events.last, g.gen
	g.mu.RUnlock()
	if e := c.cur.Load(); e.at(id, gen) {
		return e.snap
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.viewLocked()
}

// viewLocked is SnapshotView under g.mu (read or write).
func (g *Graph) viewLocked() *Snapshot {
	c := &g.snaps
	id, gen := g.events.last, g.gen
	if e := c.cur.Load(); e.at(id, gen) {
		return e.snap
	}
	s := g.snapshotLocked()
	c.cur.Store(&snapEntry{id: id, gen: gen, snap: &s})
	c.runs.Add(1)
	return &s
}

// snapshotRuns is how many times the graph was copied (for tests).
func (g *Graph) snapshotRuns() uint64 { return g.snaps.runs.Load() }

// Size is a graph's size at one event id: what /metrics exports of the
// aggregator's view, without copying the graph.
type Size struct {
	EventID uint64
	Nodes   int
	Links   int
	Routes  int
}

// Size returns the node, link and route counts and the event id.
func (g *Graph) Size() Size {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return Size{EventID: g.events.last, Nodes: len(g.nodes), Links: len(g.links), Routes: len(g.routes)}
}

// cloneSnapshot deep-copies s.
func cloneSnapshot(s *Snapshot) Snapshot {
	out := Snapshot{
		EventID: s.EventID,
		Nodes:   slices.Clone(s.Nodes),
		Links:   slices.Clone(s.Links),
		Routes:  slices.Clone(s.Routes),
	}
	for i := range out.Routes {
		r := &out.Routes[i]
		r.Hops = slices.Clone(r.Hops)
		r.Keys = slices.Clone(r.Keys)
		r.HopRTTs = slices.Clone(r.HopRTTs)
		r.Metrics.RTTExcessByKey = slices.Clone(r.Metrics.RTTExcessByKey)
		r.Metrics.SamplesByKey = slices.Clone(r.Metrics.SamplesByKey)
		r.Metrics.LostByKey = slices.Clone(r.Metrics.LostByKey)
	}
	return out
}

// lockChange takes the write lock for a change to the graph's data. The
// cached snapshot is stale from now on: dropping it lets its memory go
// (≈ 340 B per route) rather than holding it until the next read.
func (g *Graph) lockChange() {
	g.mu.Lock()
	g.gen++
	g.snaps.drop()
}

// drop forgets the cached snapshot (under g.mu's write lock, so no reader
// stores one it computed before the change).
func (c *snapCache) drop() {
	if c.cur.Load() != nil {
		c.cur.Store(nil)
	}
}
