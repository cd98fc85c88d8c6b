package graph

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// The cached snapshot is copied once per change: repeated reads share it,
// and every kind of change (a sample coalescing holds back, an imported
// route, imported metrics, a removal) makes the next read see it.
func TestSnapshotCacheInvalidates(t *testing.T) {
	g, clk := newTestGraph(t)
	g.SetRoute(kAB, hops(hA, r1, hB))
	v1 := g.SnapshotView()
	runs := g.snapshotRuns()
	if v2 := g.SnapshotView(); v2 != v1 || g.snapshotRuns() != runs {
		t.Fatalf("unchanged graph copied again (runs %d -> %d)", runs, g.snapshotRuns())
	}
	if s := g.Snapshot(); g.snapshotRuns() != runs || len(s.Routes) != 1 {
		t.Fatalf("Snapshot of an unchanged graph: runs %d -> %d, %d routes", runs, g.snapshotRuns(), len(s.Routes))
	}

	// A sample within the coalescing interval emits no event, but shows.
	clk.Advance(time.Millisecond)
	id := g.SnapshotView().EventID
	g.AddSample(kAB, Sample{Seq: 1, Sent: clk.Now(), RTT: ms(1), Source: "user"})
	if g.snaps.cur.Load() != nil {
		t.Fatal("the graph changed but still holds the stale snapshot")
	}
	v3 := g.SnapshotView()
	if v3.EventID != id {
		t.Fatalf("test premise: the sample emitted an event (%d -> %d)", id, v3.EventID)
	}
	if v3 == v1 || v3.Routes[0].Metrics.Samples != 1 {
		t.Fatalf("after a held-back sample: same view %v, samples %d", v3 == v1, v3.Routes[0].Metrics.Samples)
	}
	if v1.Routes[0].Metrics.Samples != 0 {
		t.Fatalf("the old view changed: %d samples", v1.Routes[0].Metrics.Samples)
	}

	// Imported routes and metrics.
	rt := Route{ID: "x1", Hops: []string{hA, r2, hC}, Keys: []RouteKey{key(hA, hC, 1)}, Metrics: Metrics{Samples: 5}}
	g.ImportRoute("agent-a", rt)
	v4 := g.SnapshotView()
	if len(v4.Routes) != 2 || len(v4.Nodes) != 5 {
		t.Fatalf("after import: %d routes, %d nodes", len(v4.Routes), len(v4.Nodes))
	}
	g.ImportMetrics("agent-a", []RouteMetrics{{ID: "x1", Metrics: Metrics{Samples: 9}}})
	v5 := g.SnapshotView()
	if got := routeByID(t, *v5, "x1").Metrics.Samples; got != 9 {
		t.Fatalf("after ImportMetrics: samples %d, want 9", got)
	}
	g.RemoveOrigin("agent-a")
	if v6 := g.SnapshotView(); len(v6.Routes) != 1 || len(v6.Nodes) != 3 {
		t.Fatalf("after RemoveOrigin: %d routes, %d nodes", len(v6.Routes), len(v6.Nodes))
	}

	// Snapshot is the caller's to modify.
	s := g.Snapshot()
	s.Routes[0].Hops[1] = "mutated"
	s.Routes[0].Keys[0].SrcPort = 7
	s.Nodes[0].ID = "mutated"
	v7 := g.SnapshotView()
	if v7.Routes[0].Hops[1] != r1 || v7.Routes[0].Keys[0] != kAB || v7.Nodes[0].ID == "mutated" {
		t.Fatalf("modifying Snapshot's copy changed the shared view: %+v", v7.Routes[0])
	}
	if sz := g.Size(); sz.Routes != 1 || sz.Nodes != 3 || sz.Links != 2 || sz.EventID != v7.EventID {
		t.Fatalf("Size %+v, view has %d routes %d nodes %d links at %d", sz, len(v7.Routes), len(v7.Nodes), len(v7.Links), v7.EventID)
	}
}

// Concurrent readers while the graph changes (run with -race): every view
// is consistent (each route's hops are nodes, links are its hops' pairs),
// and once the writer stops, readers arriving together share one copy.
func TestSnapshotCacheConcurrent(t *testing.T) {
	g, clk := newTestGraph(t)
	keys := []RouteKey{key(hA, hB, 1), key(hA, hB, 2), key(hA, hC, 1)}
	paths := [][]string{{hA, r1, hB}, {hA, r2, hB}, {hA, r3, hC}}
	for i, k := range keys {
		g.SetRoute(k, hops(paths[i]...))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := uint64(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := g.SnapshotView()
				if v.EventID < last {
					errs <- "event id went back"
					return
				}
				last = v.EventID
				if msg := viewInconsistency(v); msg != "" {
					errs <- msg
					return
				}
				_ = g.Snapshot()
			}
		}()
	}
	for i := range 400 {
		k := keys[i%len(keys)]
		switch i % 4 {
		case 0, 1:
			g.AddSample(k, Sample{Seq: uint64(i), Sent: clk.Now(), RTT: ms(1), Source: "user"})
		case 2:
			g.ImportRoute("o", Route{ID: "r" + string(rune('a'+i%5)), Hops: paths[i%3], Keys: []RouteKey{keys[i%3]}})
		case 3:
			g.SetRoute(k, hops(paths[(i+1)%3]...)) // path changes
			g.SetRoute(k, hops(paths[i%len(keys)]...))
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Fatal(msg)
	}

	// Readers of the settled graph share one copy.
	g.AddSample(keys[0], Sample{Seq: 1000, Sent: clk.Now(), RTT: ms(1), Source: "user"})
	runs := g.snapshotRuns()
	start := make(chan struct{})
	views := make([]*Snapshot, 8)
	for i := range views {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			views[i] = g.SnapshotView()
		}()
	}
	close(start)
	wg.Wait()
	if got := g.snapshotRuns() - runs; got != 1 {
		t.Errorf("8 concurrent readers of one state: %d copies, want 1", got)
	}
	for _, v := range views[1:] {
		if v != views[0] {
			t.Fatal("concurrent readers got different views of one state")
		}
	}
}

func viewInconsistency(v *Snapshot) string {
	nodes := make(map[string]bool, len(v.Nodes))
	for _, n := range v.Nodes {
		nodes[n.ID] = true
	}
	links := make(map[LinkID]bool, len(v.Links))
	for _, l := range v.Links {
		links[l.LinkID] = true
	}
	for _, r := range v.Routes {
		for i, h := range r.Hops {
			if !nodes[h] {
				return "route hop " + h + " is not a node"
			}
			if i > 0 && !links[LinkID{r.Hops[i-1], h}] {
				return "route hop pair is not a link"
			}
		}
		if !slices.IsSortedFunc(r.Keys, compareKeys) {
			return "route keys not sorted"
		}
	}
	return ""
}
