package plan

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/plan/simclos"
)

type fakeTarget struct {
	mu    sync.Mutex
	plans [][]Pick
	self  netip.Addr
	racks map[netip.Addr]netip.Addr
}

func (f *fakeTarget) SetPlan(p []Pick) { f.mu.Lock(); f.plans = append(f.plans, p); f.mu.Unlock() }
func (f *fakeTarget) Racks() (netip.Addr, map[netip.Addr]netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[netip.Addr]netip.Addr)
	for a, r := range f.racks {
		out[a] = r
	}
	return f.self, out
}

// TestRunnerLearnsRacks: the runner plans from membership, hands the target
// a plan only when it changes, and once routes show a rack peer it becomes
// one for good (even after the target forgot it).
func TestRunnerLearnsRacks(t *testing.T) {
	f := newFabric(simclos.Fabric{Spines: 2, ToRs: 4, HostsPerToR: 4})
	tg := &fakeTarget{racks: map[netip.Addr]netip.Addr{}}
	c := DefaultConfig()
	c.Self, c.Budget = "h0", 4
	r, err := NewRunner(c, f.hosts[0].Addr, tg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return t0 }
	for _, h := range f.hosts[1:] {
		r.Join(h.Name, h.Addr)
	}
	r.Update()
	r.Update()
	if len(tg.plans) != 1 || len(tg.plans[0]) != 4 {
		t.Fatalf("plans handed over: %v, want one plan of 4 peers", tg.plans)
	}
	for _, p := range tg.plans[0] {
		if p.Reason == ReasonRack {
			t.Fatalf("rack peer %v before any route showed a rack", p)
		}
	}
	// Routes now show h0's ToR and h1's: h1 is a rack peer.
	tg.self, tg.racks[f.hosts[1].Addr] = f.hosts[0].Rack, f.hosts[1].Rack
	r.Update()
	tg.racks = map[netip.Addr]netip.Addr{} // rotated out: the target forgot
	r.Update()
	last := r.Plan()
	found := false
	for _, p := range last {
		found = found || (p.Name == "h1" && p.Reason == ReasonRack)
	}
	if !found {
		t.Errorf("h1 not a rack peer after routes showed it: %v", last)
	}
	r.Leave("h1")
	r.Update()
	for _, p := range r.Plan() {
		if p.Name == "h1" {
			t.Errorf("h1 still planned after it left")
		}
	}
}
