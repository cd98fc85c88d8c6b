package graph

import (
	"net/netip"
	"testing"
	"time"
)

// batchRoutes gives g n routes from hA, each to its own host over r1, with
// one sample each, and returns their keys.
func batchRoutes(g *Graph, n int) []RouteKey {
	ks := make([]RouteKey, n)
	for i := range ks {
		dst := netip.AddrFrom4([4]byte{198, 18, byte(1 + i/250), byte(1 + i%250)})
		ks[i] = RouteKey{Src: addr(hA), Dst: dst, SrcPort: 40000}
		g.SetRoute(ks[i], hops(hA, r1, dst.String()))
	}
	return ks
}

// drainSub returns what is queued on sub.C without blocking.
func drainSub(sub *Subscription) []Event {
	var out []Event
	for {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				return out
			}
			out = append(out, ev)
		default:
			return out
		}
	}
}

// TestSubscribeBatched: coalesced metrics updates of every route, owed at
// the same Flush, leave as one route-batch event when the reader asks, so a
// small subscription buffer does not overflow where a plain one does; a
// path change and a removal go at once.
func TestSubscribeBatched(t *testing.T) {
	g, clk := newTestGraph(t)
	const n = 3000
	ks := batchRoutes(g, n)
	plain := g.Subscribe(g.LastEventID(), 16)
	sub := g.SubscribeBatched(g.LastEventID(), 16)
	if sub.Snapshot != nil || plain.Snapshot != nil {
		t.Fatal("resume within the replay buffer carried a snapshot")
	}
	if got := sub.Batch(); got != n {
		t.Fatalf("first batch after a resume has %d routes, want every route (%d)", got, n)
	}
	if evs := drainSub(sub); len(evs) != 1 || evs[0].Type != EventRouteBatch || len(evs[0].Batch) != n || evs[0].ID != g.LastEventID() {
		t.Fatalf("after Batch: %d events, want one route-batch of %d at id %d", len(evs), n, g.LastEventID())
	}

	for round := 1; round <= 3; round++ {
		clk.Advance(time.Second)
		for _, k := range ks {
			g.AddSample(k, Sample{Seq: uint64(round), Sent: clk.Now(), RTT: time.Duration(round) * time.Millisecond})
		}
		g.Flush()
		if evs := drainSub(sub); len(evs) != 0 {
			t.Fatalf("round %d: %d events on the batched stream before Batch (first %s), want none", round, len(evs), evs[0].Type)
		}
		if sub.Overflowed() {
			t.Fatalf("round %d: batched subscription overflowed", round)
		}
		if got := sub.Batch(); got != n {
			t.Fatalf("round %d: batch of %d routes, want %d", round, got, n)
		}
		evs := drainSub(sub)
		if len(evs) != 1 || len(evs[0].Batch) != n {
			t.Fatalf("round %d: %d events after Batch, want one batch", round, len(evs))
		}
		for _, rm := range evs[0].Batch[:3] {
			if rm.Metrics.Samples != round || rm.Metrics.RTTMax != float64(round)/1000 {
				t.Fatalf("round %d: route %s metrics %+v, want %d samples, max RTT %dms", round, rm.ID, rm.Metrics, round, round)
			}
		}
		if got := sub.Batch(); got != 0 {
			t.Fatalf("round %d: second batch without changes has %d routes", round, got)
		}
	}
	if !plain.Overflowed() {
		t.Fatal("the plain subscription with the same buffer did not overflow: the test does not show the burst")
	}

	// Only the routes that changed are owed.
	clk.Advance(time.Second)
	g.AddSample(ks[7], Sample{Seq: 9, Sent: clk.Now(), Lost: true})
	g.Flush()
	// A path change and a removal go at once, before any batch.
	g.SetRoute(ks[0], hops(hA, r2, ks[0].Dst.String()))
	g.RemoveRoute(ks[1])
	evs := drainSub(sub)
	var types []EventType
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	has := func(want EventType) bool {
		for _, ty := range types {
			if ty == want {
				return true
			}
		}
		return false
	}
	if !has(EventPathChange) || !has(EventRouteRemove) || !has(EventRouteAdd) || has(EventRouteBatch) {
		t.Fatalf("after a path change and a removal: %v, want path-change, route-add and route-remove at once", types)
	}
	if got := sub.Batch(); got != 1 {
		t.Fatalf("batch after one route's sample has %d routes, want 1", got)
	}
	if b := drainSub(sub); len(b) != 1 || b[0].Batch[0].ID != RouteID([]string{hA, r1, ks[7].Dst.String()}) || b[0].Batch[0].Metrics.Lost != 1 {
		t.Fatalf("batch %+v, want route to %s with its lost sample", b, ks[7].Dst)
	}

	// A resumed reader gets what it missed at once, minus the coalesced
	// updates, which its first batch carries with every other route.
	from := g.LastEventID()
	clk.Advance(time.Second)
	for _, k := range ks[2:5] {
		g.AddSample(k, Sample{Seq: 10, Sent: clk.Now(), RTT: time.Millisecond})
	}
	g.Flush()
	g.SetRoute(ks[2], hops(hA, r3, ks[2].Dst.String()))
	re := g.SubscribeBatched(from, 16)
	types = types[:0]
	for _, ev := range drainSub(re) {
		types = append(types, ev.Type)
	}
	if has(EventRouteUpdate) || !has(EventPathChange) {
		t.Fatalf("resumed batched stream replayed %v, want the path change and no route-update", types)
	}
	if got, want := re.Batch(), len(g.Snapshot().Routes); got != want {
		t.Fatalf("first batch after the resume has %d routes, want all %d", got, want)
	}
	re.Close()
	sub.Close()
	if got := sub.Batch(); got != 0 {
		t.Fatalf("Batch on a closed subscription queued %d routes", got)
	}
	if got := g.Subscribe(0, 0).Batch(); got != 0 {
		t.Fatalf("Batch on a plain subscription queued %d routes", got)
	}
}

// TestImportMetrics: a batch updates the metrics of the origin's routes
// under one lock and skips routes the origin does not have.
func TestImportMetrics(t *testing.T) {
	g, _ := newTestGraph(t)
	r := Route{Hops: []string{hA, r1, hB}, Keys: []RouteKey{kAB}, Metrics: Metrics{Samples: 10}}
	g.ImportRoute("a", r)
	id := RouteID(r.Hops)
	n := g.ImportMetrics("a", []RouteMetrics{
		{ID: id, Metrics: Metrics{Samples: 20, Lost: 2, Loss: 0.1}, HopRTTs: []float64{0, 0.001, 0.002}},
		{ID: "unknown", Metrics: Metrics{Samples: 5}},
	})
	if n != 1 {
		t.Fatalf("ImportMetrics updated %d routes, want 1", n)
	}
	if g.ImportMetrics("b", []RouteMetrics{{ID: id}}) != 0 {
		t.Fatal("another origin's batch updated a's route")
	}
	got := routeByID(t, g.Snapshot(), id)
	if got.Metrics.Samples != 20 || got.Metrics.Loss != 0.1 || len(got.HopRTTs) != 3 || got.Origin != "a" {
		t.Fatalf("route after the batch: %+v", got)
	}
}
