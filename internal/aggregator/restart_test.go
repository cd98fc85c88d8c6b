package aggregator

import (
	"net/netip"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
)

// TestStraddlesRestart: only routes to or from this node whose window
// began before this process started are imported without metrics.
func TestStraddlesRestart(t *testing.T) {
	start := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	a := &Aggregator{cfg: Config{SelfAddr: netip.MustParseAddr("198.18.1.10"), Started: start}}
	route := func(src, dst string, since time.Time, samples int) graph.Route {
		return graph.Route{Hops: []string{src, "198.19.0.1", dst}, Metrics: graph.Metrics{Samples: samples, Lost: samples / 2, Since: since}}
	}
	before, after := start.Add(-time.Second), start.Add(time.Millisecond)
	for _, tc := range []struct {
		name string
		r    graph.Route
		want bool
	}{
		{"to self, window before start", route("198.18.1.11", "198.18.1.10", before, 10), true},
		{"from self, window before start", route("198.18.1.10", "198.18.1.11", before, 10), true},
		{"to self, window after start", route("198.18.1.11", "198.18.1.10", after, 10), false},
		{"between others, window before start", route("198.18.1.11", "198.18.1.12", before, 10), false},
		{"no samples", route("198.18.1.11", "198.18.1.10", time.Time{}, 0), false},
	} {
		if got := a.straddlesRestart(tc.r); got != tc.want {
			t.Errorf("%s: straddles %v, want %v", tc.name, got, tc.want)
		}
	}
	if (&Aggregator{}).straddlesRestart(route("198.18.1.11", "198.18.1.10", before, 10)) {
		t.Error("without SelfAddr/Started nothing straddles")
	}
}
