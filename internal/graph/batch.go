package graph

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// EventRouteBatch carries the metrics of many routes in one event. Only
// batched subscriptions (SubscribeBatched) see it, when their reader asks
// for it (Subscription.Batch); it is not kept for replay.
const EventRouteBatch EventType = "route-batch"

// RouteMetrics is one route's entry in a route-batch event: the metrics
// (and per-hop RTTs) of a route the reader already knows from its snapshot
// or a route-add, identified like Route.
type RouteMetrics struct {
	ID      string     `json:"id"`
	Origin  string     `json:"origin,omitempty"`
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	Metrics Metrics    `json:"metrics"`
	HopRTTs []float64  `json:"hopRttSeconds,omitempty"`
}

// SubscribeBatched is Subscribe for a reader that takes metrics in batches:
// coalesced route-update events (metrics only) are not sent on C, so a burst
// of them (every route's update is owed at the same Flush) cannot overflow
// the subscription. The route is remembered instead and its current
// metrics go out in the next route-batch event, which the reader asks for
// with Batch. Every other event (route-add and -remove, a route-update
// whose keys changed or whose window was reset, path-change, node-* and
// link-*) is sent at once, as with Subscribe. C therefore skips the ids of
// the events folded into batches. A subscription that resumed (no
// Snapshot) owes its first batch every route, since what was owed before
// the resume point is not replayed.
func (g *Graph) SubscribeBatched(after uint64, buf int) *Subscription {
	return g.subscribe(after, buf, true, false)
}

// SubscribeDeltas is SubscribeBatched for a reader that takes batches in
// delta form (delta.go): a local route's entry in a batch is a RouteDelta
// in the event's Deltas, what changed in its flow state since the
// previous batch on this subscription (its whole state the first time).
// Imported routes, which have no flow state here, still come as
// RouteMetrics in Batch.
func (g *Graph) SubscribeDeltas(after uint64, buf int) *Subscription {
	return g.subscribe(after, buf, true, true)
}

// Batch queues, on C and after every event already sent, a route-batch
// event with the current metrics of every route owed to this batched
// subscription, sorted by origin then id (on a delta subscription, a
// local route's entry is its RouteDelta in Deltas instead, delta.go). Its
// ID is the graph's newest event id: the batch covers every coalesced
// update up to it, so it may repeat the ID of the event sent before it. It reports how many routes
// the batch holds; it queues nothing (0) when none is owed, when the
// subscription is not batched or is closed. A reader too far behind to
// take the batch is closed as overflowed, like on any event.
func (s *Subscription) Batch() int {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.subs[s]; !ok || !s.batched {
		return 0
	}
	var rs []*routeEntry
	if s.all {
		rs = make([]*routeEntry, 0, len(g.routes))
		for _, r := range g.routes {
			rs = append(rs, r)
		}
	} else {
		rs = make([]*routeEntry, 0, len(s.dirty))
		for r := range s.dirty {
			if g.routes[r.ikey] == r { // not removed since
				rs = append(rs, r)
			}
		}
	}
	clear(s.dirty)
	s.all = false
	if len(rs) == 0 {
		return 0
	}
	slices.SortFunc(rs, func(a, b *routeEntry) int { return cmp.Compare(a.ikey, b.ikey) })
	ev := Event{ID: g.events.last, Type: EventRouteBatch, Time: g.cfg.Now()}
	if s.sent != nil {
		ev.Deltas = &DeltaBatch{T0: ev.Time.UnixNano()}
		s.pruneSentLocked()
	}
	for _, r := range rs {
		if ev.Deltas != nil && r.local {
			ev.Deltas.Routes = append(ev.Deltas.Routes, s.routeDeltaLocked(r, ev.Deltas.T0))
			continue
		}
		rm := RouteMetrics{ID: r.routeID(), Origin: r.originName(), Src: r.srcAddr(), Dst: r.dstAddr(),
			Metrics: r.metricsOf(), HopRTTs: slices.Clone(r.hopRTT)}
		if r.local {
			rm.Origin = ""
		}
		ev.Batch = append(ev.Batch, rm)
	}
	if !s.sendLocked(ev) {
		return 0
	}
	return len(rs)
}

// ImportMetrics sets the metrics (and per-hop RTTs) of routes imported
// from origin, all under one lock: the aggregator applying a member's
// route-batch event. Entries naming a route origin does not have are
// skipped. It returns how many routes it updated.
func (g *Graph) ImportMetrics(origin string, batch []RouteMetrics) int {
	g.lockChange()
	defer g.mu.Unlock()
	n := 0
	for i := range batch {
		rm := &batch[i]
		r := g.routes[routeIKey(origin, false, rm.ID)]
		if r == nil {
			continue
		}
		r.mmu.Lock()
		r.metrics = rm.Metrics
		r.mmu.Unlock()
		g.syncSlotLocked(r)
		if len(rm.HopRTTs) == r.nHops() {
			r.hopRTT = slices.Clone(rm.HopRTTs)
		}
		g.maybeUpdateLocked(r)
		n++
	}
	return n
}

// coalescedUpdateLocked is updateAtLocked for a metrics-only update that
// coalescing held back or let through: batched subscriptions fold it into
// their next batch.
func (g *Graph) coalescedUpdateLocked(r *routeEntry, now time.Time) {
	delete(g.pending, r)
	g.setUpdated(r, now)
	g.emitLocked(Event{Type: EventRouteUpdate, Route: g.routeCopyLocked(r), coalesced: r})
}
