package plan

import (
	"context"
	"net/netip"
	"slices"
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

// probingTarget also answers RackOf from the fabric.
type probingTarget struct {
	fakeTarget
	f      fabric
	self   netip.Addr
	mu2    sync.Mutex
	probed int
}

func (p *probingTarget) RackOf(ctx context.Context, peer netip.Addr) (netip.Addr, bool, error) {
	p.mu2.Lock()
	p.probed++
	p.mu2.Unlock()
	var mine, theirs netip.Addr
	for _, h := range p.f.hosts {
		if h.Addr == p.self {
			mine = h.Rack
		}
		if h.Addr == peer {
			theirs = h.Rack
		}
	}
	return mine, mine == theirs, nil
}

// TestRunnerDiscoversRackPeers: in a cluster larger than the budget, the
// runner asks the target which members share its rack before any route
// showed them, and plans every rack peer.
func TestRunnerDiscoversRackPeers(t *testing.T) {
	f := newFabric(simclos.Fabric{Spines: 2, ToRs: 4, HostsPerToR: 8})
	tg := &probingTarget{fakeTarget: fakeTarget{racks: map[netip.Addr]netip.Addr{}}, f: f, self: f.hosts[0].Addr}
	c := DefaultConfig()
	c.Self, c.Budget = "h0", 16
	r, err := NewRunner(c, f.hosts[0].Addr, tg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range f.hosts[1:] {
		r.Join(h.Name, h.Addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	var last []Pick
	for time.Now().Before(deadline) {
		last = r.Plan()
		rack := 0
		for _, p := range last {
			if p.Reason == ReasonRack {
				rack++
			}
		}
		if rack == 7 {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the runner's plan with a deadline
	}
	cancel()
	<-done
	rack := 0
	for _, p := range last {
		if p.Reason == ReasonRack {
			rack++
		}
	}
	if rack != 7 || len(last) != 16 {
		t.Fatalf("plan after discovery: %d picks, %d rack peers, want 16 and 7: %v", len(last), rack, last)
	}
	if tg.probed > len(f.hosts)-1 {
		t.Errorf("asked %d times about %d members", tg.probed, len(f.hosts)-1)
	}
}

// TestRunnerSelectsOnlyOnChange: Update re-runs Select only when a member,
// a rack or the rotation epoch changed, and then plans exactly what Select
// returns for the new inputs.
func TestRunnerSelectsOnlyOnChange(t *testing.T) {
	f := newFabric(simclos.Fabric{Spines: 2, ToRs: 8, HostsPerToR: 8})
	tg := &fakeTarget{racks: map[netip.Addr]netip.Addr{}}
	c := DefaultConfig()
	c.Self, c.Budget = "h0", 8
	r, err := NewRunner(c, f.hosts[0].Addr, tg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	r.now = func() time.Time { return now }
	ms := []Member{{Name: "h0", Addr: f.hosts[0].Addr}}
	for _, h := range f.hosts[1:] {
		r.Join(h.Name, h.Addr)
		ms = append(ms, Member{Name: h.Name, Addr: h.Addr})
	}
	check := func(what string) {
		t.Helper()
		if got, want := r.Plan(), Select(c, ms, now); !slices.Equal(got, want) {
			t.Fatalf("%s: planned %v, Select says %v", what, got, want)
		}
	}
	r.Update()
	check("first update")
	// Nothing changed (a duplicate join included): no Select, whose
	// allocations at 64 members run to hundreds.
	r.Join("h1", f.hosts[1].Addr)
	if a := testing.AllocsPerRun(20, func() { r.Update() }); a > 5 {
		t.Fatalf("an update with nothing changed allocated %.0f times: Select ran", a)
	}
	if len(tg.plans) != 1 {
		t.Fatalf("%d plans handed over, want 1", len(tg.plans))
	}
	r.Leave(f.hosts[5].Name)
	ms = slices.DeleteFunc(ms, func(m Member) bool { return m.Name == f.hosts[5].Name })
	r.Update()
	check("after a leave")
	r.Join("new", netip.MustParseAddr("198.19.9.9"))
	ms = append(ms, Member{Name: "new", Addr: netip.MustParseAddr("198.19.9.9")})
	r.Update()
	check("after a join")
	before := r.Plan()
	now = now.Add(c.Rotate)
	r.Update()
	check("next epoch")
	if slices.Equal(before, r.Plan()) {
		t.Fatal("rotation picked the same peers in the next epoch")
	}
}

// TestRunnerGap: however fast members join, the running runner updates at
// most once per gap (and once more at start), and ends on the full plan.
func TestRunnerGap(t *testing.T) {
	f := newFabric(simclos.Fabric{Spines: 2, ToRs: 8, HostsPerToR: 8})
	tg := &fakeTarget{racks: map[netip.Addr]netip.Addr{}}
	c := DefaultConfig()
	c.Self, c.Budget = "h0", 0
	r, err := NewRunner(c, f.hosts[0].Addr, tg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.SetUpdateGap(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- r.Run(ctx) }()
	for _, h := range f.hosts[1:] {
		r.Join(h.Name, h.Addr)
		time.Sleep(time.Millisecond) // a join every millisecond: a storm, not synchronisation
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Plan()) != len(f.hosts)-1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling the runner's plan with a deadline
	}
	cancel()
	<-done
	elapsed := time.Since(start)
	if n := len(r.Plan()); n != len(f.hosts)-1 {
		t.Fatalf("final plan has %d peers, want %d", n, len(f.hosts)-1)
	}
	tg.mu.Lock()
	plans := len(tg.plans)
	tg.mu.Unlock()
	if most := int(elapsed/r.gap) + 2; plans > most {
		t.Fatalf("%d plans handed over in %v with a %v gap (at most %d; %d joins)", plans, elapsed, r.gap, most, len(f.hosts)-1)
	}
}
