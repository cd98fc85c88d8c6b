package mapper

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/plan"
)

// TestTracesToDifferentPeersRunInParallel: with Parallel 4 and 8 peers, the
// first four traces of a port are in flight together (each waits for the
// others), and never more than four.
func TestTracesToDifferentPeersRunInParallel(t *testing.T) {
	cfg := testConfig(2)
	cfg.Parallel = 4
	var (
		mu       sync.Mutex
		inFlight int
		most     int
		all4     = make(chan struct{})
		once     sync.Once
	)
	tr := &fakeTracer{}
	tr.answer = func(peer netip.Addr, port uint16, attempt int) (fakePath, error) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == 4 {
			once.Do(func() { close(all4) })
		}
		mu.Unlock()
		select {
		case <-all4:
		case <-time.After(10 * time.Second):
			t.Errorf("traces did not overlap: %d in flight", inFlight)
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return ecmpTrace(peer, port), nil
	}
	m, _ := newTestMapper(t, cfg, tr, newFakeSink())
	for i := range 8 {
		m.AddPeer(netip.AddrFrom4([4]byte{198, 18, 9, byte(i + 1)}))
	}
	runFor(t, m, tr, 16)
	if most != 4 {
		t.Errorf("at most %d traces in flight, want exactly Parallel=4", most)
	}
}

// TestTraceRateCapsProbes: under -traceRate 10/s (fake clock), the probes
// sent by any time T never exceed the burst plus 10 × T, and the mapper
// counts the time it waited.
func TestTraceRateCapsProbes(t *testing.T) {
	cfg := testConfig(5)
	cfg.Interval, cfg.Jitter = time.Millisecond, 0
	cfg.TraceRate = plan.NewRate(10)
	tr := &fakeTracer{}
	m, clk := newTestMapper(t, cfg, tr, newFakeSink())
	start := clk.Now()
	for _, p := range []netip.Addr{peerA, peerB, peerC} {
		m.AddPeer(p)
	}
	probes := 0
	runFor(t, m, tr, 30)
	for _, c := range tr.Calls() {
		probes += len(c.ttls)
	}
	elapsed := clk.Now().Sub(start).Seconds()
	if limit := 10 + 10*elapsed; float64(probes) > limit {
		t.Errorf("%d probes in %.1f s of fake time: the 10/s cap allows %.0f", probes, elapsed, limit)
	}
	if probes < 40 {
		t.Fatalf("only %d probes: the test did not exercise the cap", probes)
	}
	if s, _ := cfg.TraceRate.Stretched(clk.Now(), time.Hour); !s {
		t.Errorf("the cap never held a trace back")
	}
}

// TestRouterBudgetDelaysRounds: a trace whose TTLs are expected at known
// routers waits for their budget.
func TestRouterBudgetDelaysRounds(t *testing.T) {
	cfg := testConfig(6)
	cfg.Interval, cfg.Jitter = time.Millisecond, 0
	cfg.VerifyEvery = 1 // every port fully probed: routers answer every trace
	cfg.RouterBudget = plan.NewRouterBudget(1)
	tr := &fakeTracer{}
	m, clk := newTestMapper(t, cfg, tr, newFakeSink())
	start := clk.Now()
	m.AddPeer(peerA)
	runFor(t, m, tr, 18) // three sweeps: the later ones know the routers
	if !cfg.RouterBudget.Stretched(clk.Now(), time.Hour) {
		t.Fatalf("a 1/s router budget never held a trace")
	}
	// leaf1 is on every route: at 1 answer/s, 12 re-traces take ≥ ~11 s.
	if el := clk.Now().Sub(start); el < 10*time.Second {
		t.Errorf("12 re-traces through leaf1 took %v of fake time under a 1/s budget", el)
	}
}

// TestSetPlan: the plan's picks become the traced peers, with their reasons;
// a peer left out of the plan is removed with its routes, and a new pick is
// traced first.
func TestSetPlan(t *testing.T) {
	tr := &fakeTracer{}
	sink := newFakeSink()
	m, _ := newTestMapper(t, testConfig(2), tr, sink)
	m.SetPlan([]plan.Pick{{Addr: peerA, Reason: plan.ReasonRack}, {Addr: peerB, Reason: plan.ReasonRotation}})
	runFor(t, m, tr, 4)
	m.SetPlan([]plan.Pick{{Addr: peerA, Reason: plan.ReasonRack}, {Addr: peerC, Reason: plan.ReasonCoverage}})
	got := map[netip.Addr]plan.Reason{}
	for _, s := range m.Peers() {
		got[s.Peer] = s.Reason
	}
	if len(got) != 2 || got[peerA] != plan.ReasonRack || got[peerC] != plan.ReasonCoverage {
		t.Fatalf("peers after the second plan: %v", got)
	}
	if len(sink.removed) != 1 || sink.removed[0] != peerB {
		t.Errorf("removed %v, want peerB", sink.removed)
	}
	before := len(tr.Traces())
	runFor(t, m, tr, before+1)
	if first := tr.Traces()[before]; first.peer != peerC {
		t.Errorf("first trace after the plan went to %v, want the new peer %v", first.peer, peerC)
	}
	self, racks := m.Racks()
	if self != leaf1 || racks[peerA] != leaf2 {
		t.Errorf("Racks() = %v, %v; want %v and peerA behind %v", self, racks, leaf1, leaf2)
	}
}

// TestRackOf: a peer behind the same first-hop router answers at TTL 2; one
// across the fabric does not.
func TestRackOf(t *testing.T) {
	tr := &fakeTracer{answer: func(peer netip.Addr, port uint16, attempt int) (fakePath, error) {
		if peer == peerA {
			return fakePath{Hops: hops(leaf1, peerA), Reached: true}, nil
		}
		return ecmpTrace(peer, port), nil
	}}
	cfg := testConfig(2)
	cfg.TraceRate = plan.NewRate(10)
	m, _ := newTestMapper(t, cfg, tr, newFakeSink())
	for _, tc := range []struct {
		peer netip.Addr
		same bool
	}{{peerA, true}, {peerB, false}} {
		rack, same, err := m.RackOf(t.Context(), tc.peer)
		if err != nil || same != tc.same || rack != leaf1 {
			t.Errorf("RackOf(%v) = %v, %v, %v; want %v, %v", tc.peer, rack, same, err, leaf1, tc.same)
		}
	}
	if n := len(tr.Calls()); n != 2 {
		t.Errorf("%d probe rounds for 2 peers", n)
	}
}
