package graph

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestHopRTTs: a route carries its latest trace's per-hop RTTs aligned with
// its hops (0 for the source and for hops the trace did not time), a trace
// that timed nothing keeps the previous ones, and an imported route keeps
// what its origin reported.
func TestHopRTTs(t *testing.T) {
	a, l1, s1, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.19.0.1"), netip.MustParseAddr("198.19.1.1"), netip.MustParseAddr("198.18.1.1")
	key := RouteKey{Src: a, Dst: b, SrcPort: 40000}
	g := New(DefaultConfig())
	g.SetRoute(key, []Hop{{Addr: l1, RTT: 100 * time.Microsecond}, {}, {Addr: b, RTT: 300 * time.Microsecond}})
	rt := g.Snapshot().Routes[0]
	if want := []float64{0, 100e-6, 0, 300e-6}; !slices.Equal(rt.HopRTTs, want) || len(rt.HopRTTs) != len(rt.Hops) {
		t.Fatalf("hop RTTs %v for hops %v, want %v", rt.HopRTTs, rt.Hops, want)
	}

	// The re-trace fills in the silent hop (same route, refined) and times it.
	g.SetRoute(key, []Hop{{Addr: a}, {Addr: l1, RTT: 110 * time.Microsecond}, {Addr: s1, RTT: 200 * time.Microsecond}, {Addr: b, RTT: 310 * time.Microsecond}})
	rt = g.Snapshot().Routes[0]
	if want := []float64{0, 110e-6, 200e-6, 310e-6}; !slices.Equal(rt.HopRTTs, want) {
		t.Errorf("after the re-trace: %v, want %v", rt.HopRTTs, want)
	}
	// A trace that timed nothing (inferred hops) leaves them.
	g.SetRoute(key, []Hop{{Addr: l1}, {Addr: s1}})
	if got := g.Snapshot().Routes[0].HopRTTs; !slices.Equal(got, rt.HopRTTs) {
		t.Errorf("untimed trace replaced the RTTs: %v", got)
	}

	agg := New(DefaultConfig())
	agg.ImportRoute("host1", rt)
	if got := agg.Snapshot().Routes[0].HopRTTs; !slices.Equal(got, rt.HopRTTs) {
		t.Errorf("imported route: %v, want %v", got, rt.HopRTTs)
	}
	// A route document without them (an older agent) imports without.
	rt.HopRTTs, rt.Keys = nil, []RouteKey{{Src: b, Dst: a, SrcPort: 40000}}
	rt.ID, rt.Src, rt.Dst, rt.Hops = "", b, a, []string{b.String(), l1.String(), a.String()}
	agg.ImportRoute("host2", rt)
	for _, r := range agg.Snapshot().Routes {
		if r.Origin == "host2" && r.HopRTTs != nil {
			t.Errorf("route without RTTs imported with %v", r.HopRTTs)
		}
	}
}
