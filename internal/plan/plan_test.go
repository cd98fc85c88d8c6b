package plan

import (
	"fmt"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/plan/simclos"
)

// fabric wraps a simulated Clos with the plan's view of its hosts.
type fabric struct {
	*simclos.Fabric
	hosts []Member
}

func newFabric(f simclos.Fabric) fabric {
	sf := simclos.New(f)
	out := fabric{Fabric: sf}
	for _, h := range sf.Hosts {
		out.hosts = append(out.hosts, Member{Name: h.Name, Addr: h.Addr, Rack: h.Rack})
	}
	return out
}

// coverage returns the link coverage of the distinct routes every host's
// plan traces over ports source ports.
func (f fabric) coverage(ports int, plans func(self Member) []Pick) map[graph.LinkID]Coverage {
	var t Tally
	for _, h := range f.hosts {
		seen := make(map[string]bool)
		for _, p := range plans(h) {
			for port := 0; port < ports; port++ {
				hops := f.Route(h.Addr, p.Addr, uint16(33436+port))
				if id := graph.RouteID(hops); !seen[id] {
					seen[id] = true
					t.Add(h.Addr, hops)
				}
			}
		}
	}
	return t.Coverage()
}

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// TestCoverageOnClos is the plan's property: on Clos fabrics of several
// shapes and budgets, every agent probes at most Budget peers, every rack
// peer that fits, and the cluster's routes cross every fabric link with at
// least 3 routes from at least 2 sources, in every rotation epoch.
func TestCoverageOnClos(t *testing.T) {
	for _, tc := range []struct {
		f      simclos.Fabric
		budget int
		long   bool // skipped with -short
	}{
		{simclos.Fabric{Spines: 2, ToRs: 4, HostsPerToR: 4}, 4, false},
		{simclos.Fabric{Spines: 4, ToRs: 16, HostsPerToR: 8}, 16, false},
		{simclos.Fabric{Spines: 8, ToRs: 32, HostsPerToR: 16}, 64, true},
		{simclos.Fabric{Spines: 4, ToRs: 8, HostsPerToR: 40}, 64, false}, // racks near the budget
		{simclos.Fabric{Pods: 4, ToRs: 4, Aggs: 2, Spines: 4, HostsPerToR: 8}, 16, false},
		{simclos.Fabric{Pods: 8, ToRs: 8, Aggs: 4, Spines: 8, HostsPerToR: 16}, 64, true},
	} {
		if tc.long && testing.Short() {
			continue
		}
		f := newFabric(tc.f)
		name := fmt.Sprintf("pods%d_tors%d_spines%d_hosts%d_budget%d", f.Pods, f.ToRs, f.Spines, f.HostsPerToR, tc.budget)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, epoch := range []time.Duration{0, 10 * time.Minute, 7 * time.Hour} {
				now := t0.Add(epoch)
				c := DefaultConfig()
				c.Budget = tc.budget
				cov := f.coverage(11, func(self Member) []Pick {
					c := c
					c.Self, c.SelfRack = self.Name, self.Rack
					picks := Select(c, f.hosts, now)
					checkPicks(t, c, f.hosts, picks)
					return picks
				})
				for _, l := range f.Links() {
					if cv := cov[l]; !cv.Covered() {
						t.Errorf("at %v link %s→%s has %d routes from %d sources, want ≥ 3 from ≥ 2", epoch, l.Src, l.Dst, cv.Routes, cv.Sources)
					}
				}
			}
		})
	}
}

// checkPicks checks one agent's plan: within budget, no self, no duplicate,
// every rack peer that fits in Budget-1.
func checkPicks(t *testing.T, c Config, members []Member, picks []Pick) {
	t.Helper()
	if len(picks) > c.Budget {
		t.Fatalf("%s probes %d peers, budget %d", c.Self, len(picks), c.Budget)
	}
	seen := make(map[string]bool)
	rack := 0
	for _, p := range picks {
		if p.Name == c.Self || seen[p.Name] {
			t.Fatalf("%s picks %s twice or itself: %v", c.Self, p.Name, picks)
		}
		seen[p.Name] = true
		if p.Reason == ReasonRack {
			rack++
		}
	}
	want := 0
	for _, m := range members {
		if m.Name != c.Self && m.Rack == c.SelfRack {
			want++
		}
	}
	if len(members)-1 > c.Budget {
		want = min(want, c.Budget-1)
	}
	if rack != want {
		t.Fatalf("%s probes %d rack peers, want %d: %v", c.Self, rack, want, picks)
	}
}

func TestSmallClusterIsFullMesh(t *testing.T) {
	f := newFabric(simclos.Fabric{Spines: 2, ToRs: 2, HostsPerToR: 3})
	for _, budget := range []int{0, 5, 64} {
		c := DefaultConfig()
		c.Budget, c.Self, c.SelfRack = budget, "h0", f.hosts[0].Rack
		picks := Select(c, f.hosts, t0)
		if len(picks) != 5 {
			t.Fatalf("budget %d: %d picks, want all 5 peers", budget, len(picks))
		}
		for _, p := range picks {
			want := ReasonMesh
			if p.Rack == c.SelfRack {
				want = ReasonRack
			}
			if p.Reason != want {
				t.Errorf("budget %d: %s reason %s, want %s", budget, p.Name, p.Reason, want)
			}
		}
	}
}

// TestRotation: the plan is the same for the same name and time (restarts
// don't churn), rack and coverage peers stay across epochs, and rotation
// peers change from one epoch to the next.
func TestRotation(t *testing.T) {
	f := newFabric(simclos.Fabric{Spines: 4, ToRs: 32, HostsPerToR: 8})
	c := DefaultConfig()
	c.Budget, c.Self, c.SelfRack = 16, "h9", f.hosts[9].Rack
	a := Select(c, f.hosts, t0)
	shuffled := append([]Member(nil), f.hosts...)
	for i := range shuffled {
		j := int(hashOf(fmt.Sprint(i)) % uint64(len(shuffled)))
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	}
	if b := Select(c, shuffled, t0); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("member order changed the plan:\n%v\n%v", a, b)
	}
	_, end := Epoch(c.Self, c.Rotate, t0)
	if d := end.Sub(t0); d <= 0 || d > c.Rotate {
		t.Fatalf("epoch ends in %v, want (0, %v]", d, c.Rotate)
	}
	if b := Select(c, f.hosts, end.Add(-time.Nanosecond)); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("plan changed inside an epoch")
	}
	b := Select(c, f.hosts, end)
	fixed := func(ps []Pick) map[string]Reason {
		m := make(map[string]Reason)
		for _, p := range ps {
			if p.Reason != ReasonRotation {
				m[p.Name] = p.Reason
			}
		}
		return m
	}
	if fmt.Sprint(fixed(a)) != fmt.Sprint(fixed(b)) {
		t.Fatalf("rack/coverage peers changed across epochs:\n%v\n%v", fixed(a), fixed(b))
	}
	changed := 0
	inA := make(map[string]bool)
	for _, p := range a {
		inA[p.Name] = true
	}
	for _, p := range b {
		if !inA[p.Name] {
			changed++
		}
	}
	if changed == 0 {
		t.Fatalf("no rotation peer changed across the epoch boundary")
	}
	// Other names rotate at other moments.
	_, other := Epoch("h10", c.Rotate, t0)
	if other.Equal(end) {
		t.Errorf("h9 and h10 rotate at the same instant %v", end)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{}, {Self: "a", Budget: -1, Rotate: time.Second}, {Self: "a", Rotate: 0}, {Self: "a", Rotate: 1, RingPeers: -1}} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	c := DefaultConfig()
	c.Self = "a"
	if err := c.Validate(); err != nil {
		t.Errorf("default: %v", err)
	}
}
