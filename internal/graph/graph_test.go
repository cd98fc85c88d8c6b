package graph

import (
	"context"
	"encoding/json"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for coalescing tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func hops(ss ...string) []Hop {
	out := make([]Hop, len(ss))
	for i, s := range ss {
		if s != "*" {
			out[i].Addr = addr(s)
		}
	}
	return out
}

var (
	hA  = "198.18.0.1"
	hB  = "198.18.0.2"
	hC  = "198.18.0.3"
	r1  = "198.19.0.1"
	r2  = "198.19.0.2"
	r3  = "198.19.0.3"
	kAB = RouteKey{Src: addr(hA), Dst: addr(hB), SrcPort: 40000}
)

func key(src, dst string, port uint16) RouteKey {
	return RouteKey{Src: addr(src), Dst: addr(dst), SrcPort: port}
}

func newTestGraph(t *testing.T) (*Graph, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Now = clk.Now
	return New(cfg), clk
}

func routeByID(t *testing.T, s Snapshot, id string) Route {
	t.Helper()
	for _, r := range s.Routes {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("route %s not in snapshot (%d routes)", id, len(s.Routes))
	return Route{}
}

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func TestComputeMetrics(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	ok := func(i int, rtt float64) Sample {
		return Sample{Seq: uint64(i), Sent: at(i), RTT: ms(rtt), Source: "kernel"}
	}
	lost := func(i int, d LossDir) Sample {
		// A lost sample's RTT must be ignored even if set.
		return Sample{Seq: uint64(i), Sent: at(i), Lost: true, Dir: d, RTT: time.Hour, Source: "user"}
	}
	j2 := 0.625e-3 + (10e-3-0.625e-3)/16
	tests := []struct {
		name string
		in   []Sample
		want Metrics
	}{
		{name: "empty", in: nil, want: Metrics{}},
		{
			name: "rfc3550 jitter and percentiles",
			in:   []Sample{ok(1, 10), ok(2, 20), ok(3, 10)},
			want: Metrics{Samples: 3, RTTMin: 10e-3, RTTAvg: 40e-3 / 3, RTTP50: 10e-3, RTTP99: 20e-3, RTTMax: 20e-3,
				JitterRFC3550: j2, JitterStddev: math.Sqrt((2*math.Pow(10e-3-40e-3/3, 2) + math.Pow(20e-3-40e-3/3, 2)) / 3), Source: "kernel"},
		},
		{
			name: "lost never in latency, directions counted",
			in:   []Sample{ok(1, 10), lost(2, LossForward), lost(3, LossReverse), lost(4, LossUnknown), ok(5, 10)},
			want: Metrics{Samples: 5, Lost: 3, LostForward: 1, LostReverse: 1, Loss: 0.6, LossForward: 0.2, LossReverse: 0.2,
				RTTMin: 10e-3, RTTAvg: 10e-3, RTTP50: 10e-3, RTTP99: 10e-3, RTTMax: 10e-3, Source: "kernel"},
		},
		{
			name: "all lost",
			in:   []Sample{lost(1, LossForward), lost(2, LossForward)},
			want: Metrics{Samples: 2, Lost: 2, LostForward: 2, Loss: 1, LossForward: 1, Source: "user"},
		},
		{
			name: "ordered by send time, source of the latest",
			in:   []Sample{ok(3, 10), ok(1, 10), lost(2, LossUnknown)},
			want: Metrics{Samples: 3, Lost: 1, Loss: 1.0 / 3, RTTMin: 10e-3, RTTAvg: 10e-3, RTTP50: 10e-3, RTTP99: 10e-3, RTTMax: 10e-3, Source: "kernel"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ComputeMetrics(tc.in)
			if !metricsClose(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func metricsClose(a, b Metrics) bool {
	fa := []float64{a.Loss, a.LossForward, a.LossReverse, a.RTTMin, a.RTTAvg, a.RTTP50, a.RTTP99, a.RTTMax, a.JitterRFC3550, a.JitterStddev}
	fb := []float64{b.Loss, b.LossForward, b.LossReverse, b.RTTMin, b.RTTAvg, b.RTTP50, b.RTTP99, b.RTTMax, b.JitterRFC3550, b.JitterStddev}
	for i := range fa {
		if math.Abs(fa[i]-fb[i]) > 1e-12 {
			return false
		}
	}
	return a.Samples == b.Samples && a.Lost == b.Lost && a.LostForward == b.LostForward &&
		a.LostReverse == b.LostReverse && a.Source == b.Source
}

func TestPercentileLarge(t *testing.T) {
	var s []Sample
	for i := 1; i <= 100; i++ {
		s = append(s, Sample{Seq: uint64(i), Sent: time.Unix(int64(i), 0), RTT: time.Duration(i) * time.Millisecond})
	}
	m := ComputeMetrics(s)
	if m.RTTP50 != 0.050 || m.RTTP99 != 0.099 || m.RTTMin != 0.001 || m.RTTMax != 0.100 {
		t.Errorf("p50 %v p99 %v min %v max %v", m.RTTP50, m.RTTP99, m.RTTMin, m.RTTMax)
	}
}

func TestRingWrap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RingSize = 5
	g := New(cfg)
	id, _ := g.SetRoute(kAB, hops(hA, r1, hB))
	t0 := time.Unix(0, 0)
	// 3 losses first, then 5 good samples: the losses fall out of the ring.
	for i := 0; i < 3; i++ {
		g.AddSample(kAB, Sample{Seq: uint64(i), Sent: t0.Add(time.Duration(i) * time.Second), Lost: true, Dir: LossForward})
	}
	for i := 3; i < 8; i++ {
		g.AddSample(kAB, Sample{Seq: uint64(i), Sent: t0.Add(time.Duration(i) * time.Second), RTT: time.Duration(i) * time.Millisecond})
	}
	m := routeByID(t, g.Snapshot(), id).Metrics
	if m.Samples != 5 || m.Lost != 0 || m.RTTMin != 0.003 || m.RTTMax != 0.007 {
		t.Errorf("after wrap: %+v", m)
	}
	// One more loss replaces the oldest (3 ms).
	g.AddSample(kAB, Sample{Seq: 8, Sent: t0.Add(8 * time.Second), Lost: true, Dir: LossReverse})
	m = routeByID(t, g.Snapshot(), id).Metrics
	if m.Samples != 5 || m.Lost != 1 || m.LostReverse != 1 || m.RTTMin != 0.004 {
		t.Errorf("after one more: %+v", m)
	}
}

func TestSharedRouteMergesKeys(t *testing.T) {
	g, _ := newTestGraph(t)
	k1, k2 := key(hA, hB, 1), key(hA, hB, 2)
	id1, _ := g.SetRoute(k1, hops(hA, r1, hB))
	id2, _ := g.SetRoute(k2, hops(r1)) // endpoints added by SetRoute
	if id1 != id2 {
		t.Fatalf("same hops, different routes: %s %s", id1, id2)
	}
	g.AddSample(k1, Sample{Seq: 1, Sent: time.Unix(1, 0), RTT: ms(1)})
	g.AddSample(k2, Sample{Seq: 1, Sent: time.Unix(2, 0), Lost: true, Dir: LossForward})
	s := g.Snapshot()
	if len(s.Routes) != 1 {
		t.Fatalf("%d routes, want 1", len(s.Routes))
	}
	r := s.Routes[0]
	if !slices.Equal(r.Keys, []RouteKey{k1, k2}) {
		t.Errorf("keys %v", r.Keys)
	}
	if r.Metrics.Samples != 2 || r.Metrics.Lost != 1 {
		t.Errorf("merged metrics %+v", r.Metrics)
	}
	if !slices.Equal(r.Hops, []string{hA, r1, hB}) {
		t.Errorf("hops %v", r.Hops)
	}
	if got := g.RouteKeys(); !slices.Equal(got, []RouteKey{k1, k2}) {
		t.Errorf("RouteKeys %v", got)
	}
	if want := RouteID([]string{hA, r1, hB}); id1 != want {
		t.Errorf("id %s, want RouteID(hops) %s", id1, want)
	}
}

func TestAddSampleWithoutRoute(t *testing.T) {
	g, _ := newTestGraph(t)
	g.AddSample(kAB, Sample{Seq: 1})
	if s := g.Snapshot(); len(s.Routes) != 0 || s.EventID != 0 {
		t.Errorf("sample without route changed the graph: %+v", s)
	}
}

func TestRefcount(t *testing.T) {
	g, _ := newTestGraph(t)
	kAC := key(hA, hC, 1)
	g.SetRoute(kAB, hops(hA, r1, r2, hB))
	g.SetRoute(kAC, hops(hA, r1, r3, hC))
	s := g.Snapshot()
	if len(s.Nodes) != 6 || len(s.Links) != 5 {
		t.Fatalf("nodes %d links %d, want 6 and 5", len(s.Nodes), len(s.Links))
	}
	for _, l := range s.Links {
		want := 1
		if l.Src == hA && l.Dst == r1 {
			want = 2
		}
		if l.Routes != want {
			t.Errorf("link %v routes %d, want %d", l.LinkID, l.Routes, want)
		}
	}
	for _, n := range s.Nodes {
		want := NodeRouter
		if n.ID == hA || n.ID == hB || n.ID == hC {
			want = NodeHost
		}
		if n.Kind != want || n.Addr != addr(n.ID) {
			t.Errorf("node %+v, want kind %s", n, want)
		}
	}
	g.RemoveRoute(kAB)
	s = g.Snapshot()
	if len(s.Nodes) != 4 || len(s.Links) != 3 || len(s.Routes) != 1 {
		t.Fatalf("after removing A→B: nodes %d links %d routes %d", len(s.Nodes), len(s.Links), len(s.Routes))
	}
	for _, l := range s.Links {
		if l.Routes != 1 {
			t.Errorf("link %v routes %d, want 1", l.LinkID, l.Routes)
		}
	}
	g.RemoveRoute(kAC)
	g.RemoveRoute(kAC) // twice is a no-op
	s = g.Snapshot()
	if len(s.Nodes)+len(s.Links)+len(s.Routes) != 0 {
		t.Fatalf("not empty: %+v", s)
	}
}

func TestRemoveHost(t *testing.T) {
	g, _ := newTestGraph(t)
	g.SetRoute(key(hA, hB, 1), hops(hA, r1, hB))
	g.SetRoute(key(hA, hB, 2), hops(hA, r2, hB))
	g.SetRoute(key(hB, hA, 1), hops(hB, r1, hA))
	g.SetRoute(key(hA, hC, 1), hops(hA, r1, hC))
	g.RemoveHost(addr(hB))
	if got := g.RouteKeys(); !slices.Equal(got, []RouteKey{key(hA, hC, 1)}) {
		t.Errorf("keys left %v", got)
	}
	s := g.Snapshot()
	for _, n := range s.Nodes {
		if n.ID == hB || n.ID == r2 {
			t.Errorf("node %s still there", n.ID)
		}
	}
}

func TestSilentHop(t *testing.T) {
	g, _ := newTestGraph(t)
	id, _ := g.SetRoute(kAB, hops(hA, r1, "*", hB))
	s := g.Snapshot()
	r := routeByID(t, s, id)
	if want := SilentID(id, 2); r.Hops[2] != want {
		t.Fatalf("silent hop %q, want %q", r.Hops[2], want)
	}
	found := false
	for _, n := range s.Nodes {
		if n.ID == r.Hops[2] {
			found = true
			if n.Kind != NodeSilent || n.Addr.IsValid() {
				t.Errorf("silent node %+v", n)
			}
		}
	}
	if !found {
		t.Error("silent node missing")
	}
	// Another key with the same silent route shares it; a different route
	// with a silent hop at the same position gets its own placeholder.
	id2, _ := g.SetRoute(key(hA, hB, 2), hops(hA, r1, "*", hB))
	id3, _ := g.SetRoute(key(hA, hC, 1), hops(hA, r1, "*", hC))
	if id2 != id {
		t.Errorf("same silent trace, different route")
	}
	if SilentID(id3, 2) == SilentID(id, 2) {
		t.Errorf("placeholders collide")
	}
}

func TestPathChange(t *testing.T) {
	type step struct {
		hops       []string
		wantChange bool
		wantSameID bool // as the previous step
		keepsRing  bool
		wantHops   []string // "*" matches any placeholder
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"identical", []step{
			{hops: []string{hA, r1, r2, hB}, wantHops: []string{hA, r1, r2, hB}},
			{hops: []string{hA, r1, r2, hB}, wantSameID: true, keepsRing: true, wantHops: []string{hA, r1, r2, hB}},
		}},
		{"single new silent hop is not a change", []step{
			{hops: []string{hA, r1, r2, hB}, wantHops: []string{hA, r1, r2, hB}},
			{hops: []string{hA, r1, "*", hB}, wantSameID: true, keepsRing: true, wantHops: []string{hA, r1, r2, hB}},
		}},
		{"silent hop filled in refines the route", []step{
			{hops: []string{hA, r1, "*", hB}, wantHops: []string{hA, r1, "*", hB}},
			{hops: []string{hA, r1, r2, hB}, keepsRing: true, wantHops: []string{hA, r1, r2, hB}},
		}},
		{"different router is a change", []step{
			{hops: []string{hA, r1, r2, hB}, wantHops: []string{hA, r1, r2, hB}},
			{hops: []string{hA, r1, r3, hB}, wantChange: true, wantHops: []string{hA, r1, r3, hB}},
		}},
		{"silent hop plus different router is a change", []step{
			{hops: []string{hA, r1, r2, hB}, wantHops: []string{hA, r1, r2, hB}},
			{hops: []string{hA, "*", r3, hB}, wantChange: true, wantHops: []string{hA, "*", r3, hB}},
		}},
		{"longer path is a change", []step{
			{hops: []string{hA, r1, hB}, wantHops: []string{hA, r1, hB}},
			{hops: []string{hA, r1, r2, hB}, wantChange: true, wantHops: []string{hA, r1, r2, hB}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := newTestGraph(t)
			var prevID string
			var prevHops []string
			for i, st := range tc.steps {
				g.AddSample(kAB, Sample{Seq: uint64(i), Sent: time.Unix(int64(i), 0), RTT: ms(1)})
				before := 0
				if prevID != "" {
					before = routeByID(t, g.Snapshot(), prevID).Metrics.Samples
				}
				id, pc := g.SetRoute(kAB, hops(st.hops...))
				if i > 0 {
					if (pc != nil) != st.wantChange {
						t.Fatalf("step %d: change %+v, want change=%v", i, pc, st.wantChange)
					}
					if (id == prevID) != st.wantSameID {
						t.Errorf("step %d: id %s prev %s, want same=%v", i, id, prevID, st.wantSameID)
					}
				}
				r := routeByID(t, g.Snapshot(), id)
				if len(r.Hops) != len(st.wantHops) {
					t.Fatalf("step %d: hops %v, want %v", i, r.Hops, st.wantHops)
				}
				for j := range r.Hops {
					if st.wantHops[j] == "*" && !isSilent(r.Hops[j]) || st.wantHops[j] != "*" && r.Hops[j] != st.wantHops[j] {
						t.Errorf("step %d: hops %v, want %v", i, r.Hops, st.wantHops)
					}
				}
				if i > 0 {
					if got := r.Metrics.Samples; st.keepsRing && got != before || !st.keepsRing && got != 0 {
						t.Errorf("step %d: %d samples on the route, had %d, keepsRing=%v", i, got, before, st.keepsRing)
					}
				}
				if pc != nil {
					if pc.Key != kAB || pc.OldRoute != prevID || pc.NewRoute != id ||
						!slices.Equal(pc.OldHops, prevHops) || !slices.Equal(pc.NewHops, r.Hops) ||
						pc.HopDelta != len(r.Hops)-len(prevHops) {
						t.Errorf("step %d: change %+v", i, pc)
					}
					if len(g.Snapshot().Routes) != 1 {
						t.Errorf("old route not removed")
					}
				}
				prevID, prevHops = id, r.Hops
			}
		})
	}
}

func TestPathChangeEvent(t *testing.T) {
	g, _ := newTestGraph(t)
	g.SetRoute(kAB, hops(hA, r1, hB))
	sub := g.Subscribe(g.LastEventID(), 64)
	t.Cleanup(sub.Close)
	_, pc := g.SetRoute(kAB, hops(hA, r2, hB))
	if pc == nil {
		t.Fatal("no change")
	}
	var types []EventType
	for len(sub.C) > 0 {
		ev := <-sub.C
		types = append(types, ev.Type)
		if ev.Type == EventPathChange && (ev.Change == nil || ev.Change.NewRoute != pc.NewRoute) {
			t.Errorf("path-change event %+v", ev.Change)
		}
	}
	want := []EventType{EventNodeAdd, EventLinkAdd, EventLinkAdd, EventRouteAdd, EventPathChange,
		EventRouteRemove, EventLinkRemove, EventLinkRemove, EventNodeRemove}
	if !slices.Equal(types, want) {
		t.Errorf("events %v\nwant   %v", types, want)
	}
}

func TestEventsReplayAndSnapshot(t *testing.T) {
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Now = clk.Now
	cfg.EventBuffer = 8
	g := New(cfg)

	sub0 := g.Subscribe(0, 100)
	t.Cleanup(sub0.Close)
	if sub0.Snapshot == nil || sub0.Snapshot.EventID != 0 {
		t.Fatalf("after=0 must give a snapshot: %+v", sub0.Snapshot)
	}
	g.SetRoute(kAB, hops(hA, r1, hB)) // 3 nodes, 2 links, 1 route = 6 events
	if got := g.LastEventID(); got != 6 {
		t.Fatalf("last id %d, want 6", got)
	}
	var last uint64
	for len(sub0.C) > 0 {
		ev := <-sub0.C
		if ev.ID != last+1 {
			t.Errorf("id %d after %d", ev.ID, last)
		}
		if ev.Time.IsZero() {
			t.Error("event without time")
		}
		last = ev.ID
	}
	if last != 6 {
		t.Fatalf("live subscriber saw up to %d", last)
	}

	// Resume inside the buffer: replay, no snapshot.
	sub := g.Subscribe(3, 10)
	t.Cleanup(sub.Close)
	if sub.Snapshot != nil {
		t.Fatal("resume inside the buffer gave a snapshot")
	}
	var ids []uint64
	for len(sub.C) > 0 {
		ids = append(ids, (<-sub.C).ID)
	}
	if !slices.Equal(ids, []uint64{4, 5, 6}) {
		t.Errorf("replayed %v", ids)
	}
	// Up to date: nothing to replay.
	subNow := g.Subscribe(6, 10)
	t.Cleanup(subNow.Close)
	if subNow.Snapshot != nil || len(subNow.C) != 0 {
		t.Errorf("up-to-date resume: snapshot %v, %d events", subNow.Snapshot != nil, len(subNow.C))
	}

	// Push events out of the 8-event ring: id 3 is gone.
	g.SetRoute(key(hA, hC, 1), hops(hA, r2, hC)) // 4 new nodes/links + route
	g.SetRoute(key(hB, hC, 1), hops(hB, r3, hC))
	old := g.Subscribe(3, 10)
	t.Cleanup(old.Close)
	if old.Snapshot == nil || old.Snapshot.EventID != g.LastEventID() {
		t.Fatalf("stale resume: snapshot %+v", old.Snapshot)
	}
	if len(old.Snapshot.Routes) != 3 {
		t.Errorf("snapshot routes %d", len(old.Snapshot.Routes))
	}
	// An id from the future (another graph instance) gives a snapshot too.
	if fut := g.Subscribe(1<<40, 10); fut.Snapshot == nil {
		t.Error("future id without snapshot")
	} else {
		fut.Close()
	}
	// Events after the snapshot arrive on C.
	g.RemoveRoute(kAB)
	select {
	case ev := <-old.C:
		if ev.ID != old.Snapshot.EventID+1 || ev.Type != EventRouteRemove {
			t.Errorf("first event after snapshot %+v", ev)
		}
	default:
		t.Error("no event after snapshot")
	}
}

func TestSubscriberOverflow(t *testing.T) {
	g, _ := newTestGraph(t)
	slow := g.Subscribe(0, 2)
	fast := g.Subscribe(0, 1000)
	t.Cleanup(fast.Close)
	for i := 0; i < 20; i++ {
		g.SetRoute(key(hA, hB, uint16(i)), hops(hA, "198.19.9."+strconv.Itoa(i+1), hB))
	}
	// Drain the slow one: it ends (closed) after its buffer.
	n := 0
	for range slow.C {
		n++
	}
	if n != 2 || !slow.Overflowed() {
		t.Errorf("slow subscriber got %d events, overflowed=%v", n, slow.Overflowed())
	}
	slow.Close() // after the graph closed it: no panic
	if fast.Overflowed() || len(fast.C) != int(g.LastEventID()) {
		t.Errorf("fast subscriber: overflowed=%v, %d events of %d", fast.Overflowed(), len(fast.C), g.LastEventID())
	}
	fast.Close()
	fast.Close()
	if _, ok := <-drain(fast.C); ok {
		t.Error("closed subscription still open")
	}
}

func drain(c <-chan Event) <-chan Event {
	for len(c) > 0 {
		<-c
	}
	return c
}

func TestCoalescedUpdates(t *testing.T) {
	g, clk := newTestGraph(t)
	id, _ := g.SetRoute(kAB, hops(hA, r1, hB))
	sub := g.Subscribe(g.LastEventID(), 100)
	t.Cleanup(sub.Close)
	count := func() (n int, last *Route) {
		for len(sub.C) > 0 {
			ev := <-sub.C
			if ev.Type == EventRouteUpdate {
				n++
				last = ev.Route
			}
		}
		return n, last
	}
	for i := 0; i < 10; i++ {
		clk.Advance(50 * time.Millisecond)
		g.AddSample(kAB, Sample{Seq: uint64(i), Sent: clk.Now(), RTT: ms(1)})
	}
	g.Flush() // 500 ms after route-add: nothing due yet
	if n, _ := count(); n != 0 {
		t.Fatalf("%d updates within the interval", n)
	}
	clk.Advance(600 * time.Millisecond)
	g.Flush()
	n, last := count()
	if n != 1 || last == nil || last.ID != id || last.Metrics.Samples != 10 {
		t.Fatalf("flush: %d updates, last %+v", n, last)
	}
	g.Flush()
	if n, _ := count(); n != 0 {
		t.Fatalf("second flush sent %d", n)
	}
	// A sample after the interval goes out at once.
	clk.Advance(1100 * time.Millisecond)
	g.AddSample(kAB, Sample{Seq: 99, Sent: clk.Now(), Lost: true})
	if n, last := count(); n != 1 || last.Metrics.Lost != 1 {
		t.Fatalf("late sample: %d updates", n)
	}
	// And the next one inside the interval is held back.
	g.AddSample(kAB, Sample{Seq: 100, Sent: clk.Now(), RTT: ms(1)})
	if n, _ := count(); n != 0 {
		t.Fatalf("held-back sample sent %d", n)
	}
}

func TestImport(t *testing.T) {
	g, _ := newTestGraph(t)
	kBA := key(hB, hA, 1)
	rAB := Route{ID: "ab", Src: addr(hA), Dst: addr(hB), Hops: []string{hA, r1, hB}, Keys: []RouteKey{kAB},
		Metrics: Metrics{Samples: 100, Lost: 5, LostForward: 5, Loss: 0.05}}
	rBA := Route{ID: "ba", Src: addr(hB), Dst: addr(hA), Hops: []string{hB, r1, hA}, Keys: []RouteKey{kBA},
		Metrics: Metrics{Samples: 100}}
	g.ImportRoute("agentA", rAB)
	g.ImportRoute("agentB", rBA)
	s := g.Snapshot()
	if len(s.Routes) != 2 || len(s.Links) != 4 || len(s.Nodes) != 3 {
		t.Fatalf("snapshot %+v", s)
	}
	if r := routeByID(t, s, "ab"); r.Origin != "agentA" || r.Metrics.Lost != 5 {
		t.Errorf("imported route %+v", r)
	}
	// Upsert keeps the route, replaces metrics.
	rAB.Metrics = Metrics{Samples: 100, Lost: 7, LostForward: 7, Loss: 0.07}
	g.ImportRoute("agentA", rAB)
	if r := routeByID(t, g.Snapshot(), "ab"); r.Metrics.Lost != 7 {
		t.Errorf("upsert metrics %+v", r.Metrics)
	}
	// The key moves to another path: path change, old route gone.
	sub := g.Subscribe(g.LastEventID(), 100)
	t.Cleanup(sub.Close)
	g.ImportRoute("agentA", Route{ID: "ab2", Hops: []string{hA, r2, hB}, Keys: []RouteKey{kAB}, Metrics: Metrics{Samples: 3}})
	var sawChange bool
	for len(sub.C) > 0 {
		if ev := <-sub.C; ev.Type == EventPathChange && ev.Change.OldRoute == "ab" && ev.Change.NewRoute == "ab2" {
			sawChange = true
		}
	}
	if !sawChange {
		t.Error("no path-change event on import")
	}
	s = g.Snapshot()
	if len(s.Routes) != 2 {
		t.Fatalf("routes %d, want 2", len(s.Routes))
	}
	if r := routeByID(t, s, "ab2"); r.Src != addr(hA) || r.Dst != addr(hB) {
		t.Errorf("src/dst from hops: %+v", r)
	}
	g.RemoveImportedRoute("agentA", kAB)
	g.RemoveImportedRoute("agentA", kAB)
	if s := g.Snapshot(); len(s.Routes) != 1 || s.Routes[0].ID != "ba" {
		t.Errorf("after RemoveImportedRoute: %+v", s.Routes)
	}
	g.ImportRoute("agentA", rAB)
	g.RemoveOrigin("agentB")
	s = g.Snapshot()
	if len(s.Routes) != 1 || s.Routes[0].ID != "ab" || len(s.Links) != 2 {
		t.Errorf("after RemoveOrigin: %+v", s)
	}
	g.RemoveOrigin("agentA")
	if s := g.Snapshot(); len(s.Nodes) != 0 {
		t.Errorf("not empty: %+v", s)
	}
	// Local and imported routes with the same id do not collide.
	id, _ := g.SetRoute(kAB, hops(hA, r1, hB))
	g.ImportRoute("", Route{ID: id, Hops: []string{hA, r1, hB}, Keys: []RouteKey{kAB}})
	g.RemoveOrigin("")
	if ks := g.RouteKeys(); len(ks) != 1 || len(g.Snapshot().Routes) != 1 {
		t.Errorf("local route hit by RemoveOrigin: %v", ks)
	}
}

func TestSnapshotJSONRoundTrip(t *testing.T) {
	g, _ := newTestGraph(t)
	g.SetRoute(kAB, hops(hA, r1, "*", hB))
	g.AddSample(kAB, Sample{Seq: 1, Sent: time.Unix(1, 0), RTT: ms(2), Source: "ebpf"})
	s := g.Snapshot()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if _, err := HealthOf(back); err != nil {
		t.Errorf("HealthOf(round trip): %v\n%s", err, b)
	}
	if len(back.Nodes) != len(s.Nodes) || back.Routes[0].Metrics.RTTMin != 0.002 {
		t.Errorf("round trip lost data:\n%s", b)
	}
}

func TestConcurrentReadersWriters(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CoalesceInterval = time.Microsecond
	cfg.EventBuffer = 64
	g := New(cfg)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	const iters = 400
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < iters; i++ {
				k := key(hA, hB, uint16(w*1000+i%7))
				mid := []string{r1, r2, r3}[(i+w)%3]
				g.SetRoute(k, hops(hA, mid, hB))
				g.AddSample(k, Sample{Seq: uint64(i), Sent: time.Unix(int64(i), 0), Lost: i%5 == 0, RTT: ms(1)})
				if i%11 == 0 {
					g.RemoveRoute(k)
				}
				if i%50 == 0 {
					g.ImportRoute("x", Route{ID: "imp", Hops: []string{hB, r1, hA}, Keys: []RouteKey{key(hB, hA, 1)}})
					g.RemoveOrigin("x")
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := 0; r < 3; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch r {
				case 0:
					s := g.Snapshot()
					if s.EventID < last {
						t.Errorf("snapshot id went back: %d < %d", s.EventID, last)
						return
					}
					last = s.EventID
				case 1:
					g.Health()
					g.RouteKeys()
				case 2:
					sub := g.Subscribe(last, 8)
					prev := last
					if sub.Snapshot != nil {
						prev = sub.Snapshot.EventID
					}
				recv:
					for i := 0; i < 20; i++ {
						var ev Event
						var ok bool
						// The writers may finish before 20 more events come.
						select {
						case ev, ok = <-sub.C:
						case <-stop:
							break recv
						}
						if !ok {
							break
						}
						if ev.ID != prev+1 {
							t.Errorf("subscriber: id %d after %d", ev.ID, prev)
						}
						prev = ev.ID
					}
					last = prev
					sub.Close()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	// Everything left must be consistent.
	if _, err := HealthOf(g.Snapshot()); err != nil {
		t.Errorf("final snapshot inconsistent: %v", err)
	}
}

func TestRunFlushes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CoalesceInterval = 20 * time.Millisecond
	g := New(cfg)
	g.SetRoute(kAB, hops(hA, r1, hB))
	sub := g.Subscribe(g.LastEventID(), 100)
	t.Cleanup(sub.Close)
	g.AddSample(kAB, Sample{Seq: 1, RTT: ms(1)}) // within the interval: held back
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case ev := <-sub.C:
			got = ev.Type == EventRouteUpdate && ev.Route.Metrics.Samples == 1
		case <-deadline:
			t.Fatal("Run never flushed the held-back update")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
