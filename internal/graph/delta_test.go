package graph

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

// deltaRig is a member graph with a delta subscription and an aggregator
// graph that applies what the subscription carries the way the aggregator
// does (routes from events, metrics from batches).
type deltaRig struct {
	t      *testing.T
	now    time.Time
	member *Graph
	agg    *Graph
	sub    *Subscription
	keys   map[string][]RouteKey // route id -> keys imported for it
	owner  map[RouteKey]string   // key -> the route id it was last imported with
	// batched are the routes of the last batch: their hop RTTs must
	// agree too (a trace that changes only them rides on the next batch).
	batched map[string]bool
	// mutate, when set, may change a batch on the wire.
	mutate  func(*DeltaBatch)
	refused string // why the aggregator refused a mutated batch
	bytes   int    // JSON bytes of the delta batches
	routes  int    // route entries in them
	partial int    // of which partial ones
}

func newDeltaRig(t *testing.T, ring int) *deltaRig {
	rig := &deltaRig{t: t, now: time.Unix(1_800_000_000, 0), keys: map[string][]RouteKey{}, owner: map[RouteKey]string{}}
	cfg := DefaultConfig()
	cfg.RingSize = ring
	cfg.BaselineWindow = 8 * time.Second // baselines that change within a test
	cfg.Now = func() time.Time { return rig.now }
	rig.member = New(cfg)
	rig.agg = New(DefaultConfig())
	rig.sub = rig.member.SubscribeDeltas(0, 1<<20)
	return rig
}

// drain applies every event queued on the subscription.
func (rig *deltaRig) drain() {
	rig.t.Helper()
	if s := rig.sub.Snapshot; s != nil {
		for _, r := range s.Routes {
			rig.importRoute(r)
		}
		rig.sub.Snapshot = nil
	}
	for {
		select {
		case ev, ok := <-rig.sub.C:
			if !ok {
				rig.t.Fatal("subscription closed")
			}
			rig.apply(ev)
		default:
			return
		}
	}
}

func (rig *deltaRig) importRoute(r Route) {
	r.Origin = "m"
	rig.agg.ImportRoute("m", r)
	rig.keys[r.ID] = slices.Clone(r.Keys)
	for _, k := range r.Keys {
		rig.owner[k] = r.ID
	}
}

func (rig *deltaRig) apply(ev Event) {
	rig.t.Helper()
	switch ev.Type {
	case EventRouteAdd, EventRouteUpdate:
		rig.importRoute(*ev.Route)
	case EventRouteRemove:
		for _, k := range rig.keys[ev.Route.ID] {
			if rig.owner[k] == ev.Route.ID {
				rig.agg.RemoveImportedRoute("m", k)
				delete(rig.owner, k)
			}
		}
		delete(rig.keys, ev.Route.ID)
	case EventRouteBatch:
		if len(ev.Batch) > 0 {
			rig.t.Fatalf("a delta batch of local routes carries %d RouteMetrics", len(ev.Batch))
		}
		// The wire: JSON out and back, then the aggregator's checks.
		b, err := json.Marshal(ev.Deltas)
		if err != nil {
			rig.t.Fatal(err)
		}
		rig.bytes += len(b)
		var d DeltaBatch
		if err := json.Unmarshal(b, &d); err != nil {
			rig.t.Fatal(err)
		}
		rig.routes += len(d.Routes)
		for _, rd := range d.Routes {
			rig.batched[rd.ID] = true
			if !rd.Full {
				rig.partial++
			}
		}
		if rig.mutate != nil {
			rig.mutate(&d)
		}
		if err := d.Validate(); err != nil {
			rig.t.Fatalf("member's batch does not validate: %v\n%s", err, b)
		}
		if _, err := rig.agg.ImportDeltas("m", d, nil); err != nil {
			if rig.mutate != nil { // a check of the aggregator's caught it
				rig.refused = err.Error()
				return
			}
			rig.t.Fatalf("member's batch does not apply: %v\n%s", err, b)
		}
	}
}

// batch flushes what coalescing holds back, takes a batch and applies it.
func (rig *deltaRig) batch() {
	rig.now = rig.now.Add(1100 * time.Millisecond)
	rig.member.Flush()
	rig.batched = map[string]bool{}
	rig.sub.Batch()
	rig.drain()
}

// mismatch compares every member route with the aggregator's copy: keys,
// every metrics field, and the hop RTTs of the routes in the last batch.
// "" when they agree.
func (rig *deltaRig) mismatch() string {
	if rig.refused != "" {
		return rig.refused
	}
	mine := rig.member.Snapshot().Routes
	theirs := map[string]Route{}
	for _, r := range rig.agg.Snapshot().Routes {
		theirs[r.ID] = r
	}
	if len(mine) != len(theirs) {
		return fmt.Sprintf("member has %d routes, aggregator %d", len(mine), len(theirs))
	}
	for _, r := range mine {
		a, ok := theirs[r.ID]
		switch {
		case !ok:
			return fmt.Sprintf("route %s missing at the aggregator", r.ID)
		case !slices.Equal(r.Keys, a.Keys):
			return fmt.Sprintf("route %s keys %v, aggregator %v", r.ID, r.Keys, a.Keys)
		case rig.batched[r.ID] && !slices.Equal(r.HopRTTs, a.HopRTTs):
			return fmt.Sprintf("route %s hop RTTs %v, aggregator %v", r.ID, r.HopRTTs, a.HopRTTs)
		case !reflect.DeepEqual(r.Metrics, a.Metrics):
			return fmt.Sprintf("route %s metrics differ:\nmember     %+v\naggregator %+v", r.ID, r.Metrics, a.Metrics)
		}
	}
	return ""
}

// deltaSchedule drives a member through a random schedule: ports taking
// turns in stints, losses of each direction and unknown ones resolved
// later, peer resets, keys leaving routes and coming back, path changes
// and silent hops filled in. check runs after every batch.
func deltaSchedule(rig *deltaRig, rng *rand.Rand, steps int, check func(step int)) {
	src := netip.MustParseAddr("198.18.0.1")
	dsts := []netip.Addr{netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.1.2")}
	r1, r2, r3 := netip.MustParseAddr("198.18.10.1"), netip.MustParseAddr("198.18.10.2"), netip.MustParseAddr("198.18.10.3")
	var keys []RouteKey
	for _, d := range dsts {
		for p := range 4 {
			keys = append(keys, RouteKey{Src: src, Dst: d, SrcPort: uint16(33434 + p)})
		}
	}
	route := func(k RouteKey) {
		h := []Hop{{Addr: r1, RTT: time.Duration(rng.IntN(500)) * time.Microsecond}, {}, {Addr: k.Dst}}
		switch rng.IntN(4) {
		case 0: // a silent second hop: a later trace may fill it in
		case 1:
			h[1].Addr = r3
		default:
			h[1].Addr = r2
		}
		rig.member.SetRoute(k, h)
	}
	for _, k := range keys {
		route(k)
	}
	type loss struct {
		k    RouteKey
		sent time.Time
	}
	var unknown []loss
	turn, stint := keys[0], 0
	sources := []TimeSource{"ebpf", "ebpf", "ebpf", "kernel"}
	for step := range steps {
		rig.now = rig.now.Add(time.Duration(1+rng.IntN(40)) * time.Millisecond)
		switch x := rng.IntN(1000); {
		case x < 5:
			rig.member.ResetPeer(dsts[rng.IntN(2)], rig.now)
		case x < 20:
			rig.member.RemoveRoute(keys[rng.IntN(len(keys))])
		case x < 45:
			route(keys[rng.IntN(len(keys))])
		case x < 110 && len(unknown) > 0:
			i := rng.IntN(len(unknown))
			l := unknown[i]
			unknown = slices.Delete(unknown, i, i+1)
			rig.member.AddSample(l.k, Sample{Sent: l.sent, Lost: true, Dir: LossDir(1 + rng.IntN(2)), Resolves: true})
		default:
			if stint <= 0 { // the next port's turn
				turn, stint = keys[rng.IntN(len(keys))], 1+rng.IntN(30)
			}
			stint--
			s := Sample{Seq: uint64(step), Sent: rig.now, Source: sources[rng.IntN(len(sources))]}
			if rng.IntN(8) == 0 {
				s.Lost, s.Dir = true, LossDir(rng.IntN(3))
				if s.Dir == LossUnknown {
					unknown = append(unknown, loss{turn, s.Sent})
				}
			} else {
				s.RTT = time.Duration(80_000 + rng.IntN(40_000) + rng.IntN(2)*rng.IntN(2_000_000))
			}
			rig.member.AddSample(turn, s)
		}
		if rng.IntN(40) == 0 {
			rig.batch()
			check(step)
		}
	}
}

// TestDeltaEquivalence is the delta form's correctness: over random
// schedules, after every batch the aggregator's metrics for every route,
// computed from its replica of the buckets, equal the member's own.
func TestDeltaEquivalence(t *testing.T) {
	seeds := uint64(12)
	if testing.Short() {
		seeds = 4
	}
	for _, ring := range []int{20, 100} {
		for seed := range seeds {
			t.Run(fmt.Sprintf("ring%d/seed%d", ring, seed), func(t *testing.T) {
				rig := newDeltaRig(t, ring)
				rng := rand.New(rand.NewPCG(seed, uint64(ring)))
				batches := 0
				deltaSchedule(rig, rng, 3000, func(step int) {
					batches++
					if d := rig.mismatch(); d != "" {
						t.Fatalf("after the batch at step %d: %s", step, d)
					}
				})
				if batches < 40 || rig.partial < 20 {
					t.Fatalf("%d batches with %d partial route entries: the schedule tested little", batches, rig.partial)
				}
			})
		}
	}
}

// TestDeltaEquivalenceCanFail checks that a replica one bucket short is
// seen: the same schedules with one changed bucket dropped from one batch
// must end in a mismatch (or the aggregator refusing the batch, when the
// bucket was one the key's ring gained).
func TestDeltaEquivalenceCanFail(t *testing.T) {
	for seed := range uint64(4) {
		rig := newDeltaRig(t, 20)
		rng := rand.New(rand.NewPCG(seed, 7))
		dropped, caught := false, false
		rig.mutate = func(d *DeltaBatch) {
			for i := range d.Routes {
				rd := &d.Routes[i]
				for j := range rd.Keys {
					if kd := &rd.Keys[j]; !dropped && !rd.Full && len(kd.Buckets) > 0 && kd.Len > 2 {
						kd.Buckets = kd.Buckets[:len(kd.Buckets)-1]
						dropped = true
					}
				}
			}
		}
		deltaSchedule(rig, rng, 3000, func(int) {
			if dropped && rig.mismatch() != "" {
				caught = true
			}
		})
		if !dropped || !caught {
			t.Errorf("seed %d: dropped a bucket %v, mismatch seen %v", seed, dropped, caught)
		}
	}
}

// deltaSeed is a real member's snapshot and first delta batch.
func deltaSeed(tb testing.TB) (Snapshot, DeltaBatch) {
	tb.Helper()
	now := time.Unix(1_800_000_000, 0)
	cfg := DefaultConfig()
	cfg.RingSize = 20
	cfg.Now = func() time.Time { return now }
	g := New(cfg)
	g.SetRoute(kAB, hops(hA, r1, hB))
	sub := g.SubscribeDeltas(0, 1<<10)
	for i := range 30 {
		s := Sample{Seq: uint64(i), Sent: now.Add(time.Duration(i) * time.Millisecond), RTT: ms(1) + time.Duration(i)*time.Microsecond, Source: "ebpf"}
		if i%7 == 0 {
			s = Sample{Seq: uint64(i), Sent: s.Sent, Lost: true, Dir: LossDir(i % 3)}
		}
		g.AddSample(kAB, s)
	}
	now = now.Add(2 * time.Second)
	g.Flush()
	sub.Batch()
	for ev := range sub.C {
		if ev.Deltas != nil {
			return *sub.Snapshot, *ev.Deltas
		}
	}
	tb.Fatal("no delta batch")
	return Snapshot{}, DeltaBatch{}
}

// FuzzDeltaBatch feeds arbitrary delta batches to an aggregator graph
// holding the member's route: Validate rejects them or ImportDeltas
// applies or refuses them, never panicking, and what it computes is a
// route's metrics that encode (no NaN) and make sense.
func FuzzDeltaBatch(f *testing.F) {
	snap, d := deltaSeed(f)
	seed, _ := json.Marshal(d)
	f.Add(seed)
	partial := d
	partial.Routes = []RouteDelta{d.Routes[0]}
	partial.Routes[0].Full, partial.Routes[0].Window = false, 0
	seed, _ = json.Marshal(partial)
	f.Add(seed)
	f.Add([]byte(`{"t0":-9223372036854775808,"routes":[{"id":"x","full":true,"w":1,"j":0,"k":[{"p":1,"h":0,"n":1,"b":[[0,0,0,0,16,0,0,0,5,6,0,0,4479,16]]}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d DeltaBatch
		if err := json.Unmarshal(b, &d); err != nil || d.Validate() != nil {
			return
		}
		g := New(DefaultConfig())
		for _, r := range snap.Routes {
			g.ImportRoute("m", r)
		}
		for range 2 { // a second time: idempotent buckets over a replica
			if _, err := g.ImportDeltas("m", d, nil); err != nil {
				return
			}
		}
		out := g.Snapshot()
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("metrics do not encode: %v", err)
		}
		for _, r := range out.Routes {
			m := r.Metrics
			if m.Samples < 0 || m.Lost > m.Samples || m.LostForward+m.LostReverse > m.Lost || m.Loss < 0 || m.Loss > 1 || m.RTTMin > m.RTTMax {
				t.Fatalf("metrics %+v", m)
			}
		}
	})
}

// TestChangedSince: a bucket stamp's 16 bits tell every change since the
// version last sent, across the wrap, and at worst send an old bucket again.
func TestChangedSince(t *testing.T) {
	for _, c := range []struct {
		stamp      uint16
		sent, now  uint64
		changed    bool
		whyChanged string
	}{
		{5, 4, 5, true, "the change after sent"},
		{4, 4, 9, false, "the change sent"},
		{3, 4, 9, false, "an older change"},
		{2, 65_534, 65_538, true, "a change past the wrap (65,538 & 0xffff)"},
		{65_534, 65_534, 65_538, false, "the change sent, before the wrap"},
		{9, 4, 9, true, "the newest change"},
		{10, 4, 9, false, "a stamp past now is from long before sent"},
	} {
		if got := changedSince(c.stamp, c.sent, c.now); got != c.changed {
			t.Errorf("stamp %d sent %d now %d (%s): changed %v", c.stamp, c.sent, c.now, c.whyChanged, got)
		}
	}
}

// TestDeltaAfterManyChanges: a route that changed 65,536 times or more
// between two batches is sent whole, and its copy still equals it.
func TestDeltaAfterManyChanges(t *testing.T) {
	rig := newDeltaRig(t, 20)
	k := RouteKey{Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.1.1"), SrcPort: 33434}
	rig.member.SetRoute(k, []Hop{{Addr: netip.MustParseAddr("198.18.10.1")}})
	fulls := 0
	for round, n := range []int{30, 70_000, 30} {
		for i := range n {
			rig.now = rig.now.Add(time.Microsecond)
			rig.member.AddSample(k, Sample{Sent: rig.now, RTT: time.Duration(100_000 + i%977), Source: "ebpf"})
		}
		before := rig.routes - rig.partial
		rig.batch()
		if d := rig.mismatch(); d != "" {
			t.Fatalf("round %d: %s", round, d)
		}
		if rig.routes-rig.partial > before {
			fulls++
		}
	}
	if fulls != 2 {
		t.Fatalf("%d full entries, want 2 (the first, and after 70,000 changes)", fulls)
	}
}
