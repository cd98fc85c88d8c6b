package pinger

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/probe"
)

// routedFake is fakeRoutes with route ids: peerA's ports 33436-33437 share
// route r1 and 33438-33439 share r2; every other flow is a route of its own.
type routedFake struct{ fakeRoutes }

func (r *routedFake) RouteOf(k graph.RouteKey) (string, bool) {
	if k.Dst == peerA {
		if k.SrcPort < 33438 {
			return "r1", true
		}
		return "r2", true
	}
	return "own-" + k.Dst.String() + "-" + string(rune(k.SrcPort)), true
}

func newScheduleTest(t *testing.T, cfg Config) (*Pinger, *fakeProber) {
	t.Helper()
	fp := &fakeProber{res: make(chan probe.Result, 100)}
	cfg.Local, cfg.Registerer = local, prometheus.NewRegistry()
	p, err := New(cfg, fp, &routedFake{fakeRoutes{keys: keys()}}, &fakeSink{})
	if err != nil {
		t.Fatal(err)
	}
	return p, fp
}

func run(p *Pinger, fp *fakeProber, d time.Duration) map[flowKey]int {
	now := time.Unix(1000, 0)
	fp.clock = func() time.Time { return now }
	for end := now.Add(d); now.Before(end); now = now.Add(p.cfg.PeerInterval) {
		p.visit(now)
	}
	per := map[flowKey]int{}
	for _, k := range fp.pings {
		per[k]++
	}
	return per
}

// TestEveryPortWithoutReverse: without reverse routes (or with
// EveryPort) every port keeps its own schedule, pinged once a second.
func TestEveryPortWithoutReverse(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no reverse source": DefaultConfig(),
		"EveryPort":         {EveryPort: true, Reverse: sameReverse()},
	} {
		p, fp := newScheduleTest(t, cfg)
		per := run(p, fp, 100*time.Second)
		if len(per) != 8 {
			t.Errorf("%s: %d flows pinged, want all 8", name, len(per))
		}
		for k, n := range per {
			if n < 99 || n > 101 {
				t.Errorf("%s: flow %v pinged %d times in 100 s, want 100±1", name, k, n)
			}
		}
	}
}

// TestProbeRateCap: with -probeRate below what the schedule asks, pings
// never exceed burst + rate × time, the deferral is counted, and every
// route still gets its share (most overdue first).
func TestProbeRateCap(t *testing.T) {
	cfg := DefaultConfig()
	// 8 flows at 1/s
	cfg.Rate = plan.NewRate(4)
	p, fp := newScheduleTest(t, cfg)
	per := run(p, fp, 100*time.Second)
	total := 0
	for k, n := range per {
		total += n
		if n < 40 {
			t.Errorf("flow %v starved: %d pings in 100 s", k, n)
		}
	}
	if total > 4+4*100 {
		t.Errorf("%d pings in 100 s under a 4/s cap", total)
	}
	if total < 390 {
		t.Errorf("%d pings in 100 s: the cap let through less than it allows", total)
	}
	if d := testutil.ToFloat64(p.deferred); d < 300 {
		t.Errorf("dnms_pings_deferred_total = %v, want the ~400 pings the cap held", d)
	}
	if s, _ := cfg.Rate.Stretched(time.Unix(1100, 0), time.Second); !s {
		t.Errorf("cap not reported as stretching the interval")
	}
}
