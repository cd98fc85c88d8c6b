package pinger

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
)

// fakeReverse is a reverse route source: port → id per peer; a missing
// port is unknown.
type fakeReverse struct {
	mu  sync.Mutex
	ids map[netip.Addr]map[uint16]string
}

func (f *fakeReverse) ReverseOf(k graph.RouteKey) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.ids[k.Dst][k.SrcPort]
	return id, ok
}

func (f *fakeReverse) set(peer netip.Addr, port uint16, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" {
		delete(f.ids[peer], port)
		return
	}
	f.ids[peer][port] = id
}

// sameReverse: every port of both peers comes back on one route per peer.
func sameReverse() *fakeReverse {
	f := &fakeReverse{ids: map[netip.Addr]map[uint16]string{peerA: {}, peerB: {}}}
	for p := uint16(33436); p < 33440; p++ {
		f.ids[peerA][p], f.ids[peerB][p] = "back-a", "back-b"
	}
	return f
}

// groupsOf writes a peer's groups as "fwd/rev:ports" for comparison.
func groupsOf(p *Pinger, peer netip.Addr) []string {
	var out []string
	for _, pg := range p.Groups() {
		if pg.Peer != peer {
			continue
		}
		for _, g := range pg.Groups {
			out = append(out, fmt.Sprintf("%s/%s:%v", g.Forward, g.Reverse, g.Ports))
		}
	}
	return out
}

// TestPortGroups: peerA's ports 33436-37 take forward route r1 and 33438-39
// r2 (routedFake); every peerB port has its own forward route. Ports share
// a schedule only when both routes are known and equal.
func TestPortGroups(t *testing.T) {
	tests := []struct {
		name    string
		reverse func() *fakeReverse
		wantA   []string
		wantB   int // peerB schedules
	}{
		{"both known, one reverse route", sameReverse,
			[]string{"r1/back-a:[33436 33437]", "r2/back-a:[33438 33439]"}, 4},
		{"both known, two reverse routes", func() *fakeReverse {
			f := sameReverse()
			f.set(peerA, 33437, "back-a2")
			f.set(peerA, 33439, "back-a2")
			return f
		}, []string{"r1/back-a:[33436]", "r1/back-a2:[33437]", "r2/back-a:[33438]", "r2/back-a2:[33439]"}, 4},
		{"reverse unknown for one port", func() *fakeReverse {
			f := sameReverse()
			f.set(peerA, 33439, "")
			return f
		}, []string{"r1/back-a:[33436 33437]", "r2/back-a:[33438]", "/:[33439]"}, 4},
		{"forward only (no reverse known)", func() *fakeReverse {
			return &fakeReverse{ids: map[netip.Addr]map[uint16]string{}}
		}, []string{"/:[33436]", "/:[33437]", "/:[33438]", "/:[33439]"}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, fp := newScheduleTest(t, Config{Reverse: tc.reverse()})
			per := run(p, fp, 100*time.Second)
			if got := groupsOf(p, peerA); !slices.Equal(got, tc.wantA) {
				t.Errorf("peerA groups %v, want %v", got, tc.wantA)
			}
			if got := len(groupsOf(p, peerB)); got != tc.wantB {
				t.Errorf("peerB: %d schedules, want %d", got, tc.wantB)
			}
			// Each group gets one ping a second, shared by its ports.
			for _, g := range p.Groups() {
				for _, grp := range g.Groups {
					want := 100 / len(grp.Ports)
					for _, port := range grp.Ports {
						if n := per[flowKey{g.Peer, port}]; n < want-2 || n > want+2 {
							t.Errorf("%s port %d (group of %d) pinged %d times in 100 s, want %d±2", g.Peer, port, len(grp.Ports), n, want)
						}
					}
				}
			}
		})
	}
}

// TestPortGroupsRegroup: a reverse route change splits a group at the next
// visit, and the split port gets a schedule of its own.
func TestPortGroupsRegroup(t *testing.T) {
	rev := sameReverse()
	p, fp := newScheduleTest(t, Config{Reverse: rev})
	run(p, fp, 10*time.Second)
	if got := groupsOf(p, peerA); len(got) != 2 {
		t.Fatalf("before: peerA groups %v, want 2", got)
	}
	rev.set(peerA, 33437, "back-a-moved")
	fp.pings = nil
	now := time.Unix(2000, 0)
	fp.clock = func() time.Time { return now }
	for end := now.Add(20 * time.Second); now.Before(end); now = now.Add(p.cfg.PeerInterval) {
		p.visit(now)
	}
	want := []string{"r1/back-a:[33436]", "r1/back-a-moved:[33437]", "r2/back-a:[33438 33439]"}
	if got := groupsOf(p, peerA); !slices.Equal(got, want) {
		t.Errorf("after the change: peerA groups %v, want %v", got, want)
	}
	n := 0
	for _, k := range fp.pings {
		if k == (flowKey{peerA, 33437}) {
			n++
		}
	}
	if n < 18 || n > 21 {
		t.Errorf("the moved port was pinged %d times in 20 s, want ~20 (a schedule of its own)", n)
	}
}

// TestPortGroupsRotation: the ports of one group take turns, so every port
// is pinged within k rounds (k = ports in the group) and a silent path
// change on any of them shows within k × RouteInterval.
func TestPortGroupsRotation(t *testing.T) {
	rev := sameReverse()
	fr := &allOneRoute{fakeRoutes{keys: keys()}}
	fp := &fakeProber{}
	p, err := New(Config{Local: local, Reverse: rev}, fp, fr, &fakeSink{})
	if err != nil {
		t.Fatal(err)
	}
	run(p, fp, 40*time.Second)
	if got := groupsOf(p, peerA); len(got) != 1 {
		t.Fatalf("peerA groups %v, want one group of 4 ports", got)
	}
	var toA []uint16
	for _, k := range fp.pings {
		if k.peer == peerA {
			toA = append(toA, k.port)
		}
	}
	if len(toA) < 39 || len(toA) > 41 {
		t.Fatalf("peerA: %d pings in 40 s, want 40±1 (one schedule)", len(toA))
	}
	const k = 4
	for i := 0; i+k <= len(toA); i++ {
		w := slices.Clone(toA[i : i+k])
		slices.Sort(w)
		if w = slices.Compact(w); len(w) != k {
			t.Fatalf("rounds %d..%d pinged ports %v: not every port of the group", i, i+k-1, toA[i:i+k])
		}
	}
}

// allOneRoute: every port to a peer takes the same forward route.
type allOneRoute struct{ fakeRoutes }

func (r *allOneRoute) RouteOf(k graph.RouteKey) (string, bool) { return "to-" + k.Dst.String(), true }

// TestPortGroupsLoad: the pings per second drop from one per port to one
// per distinct (forward, reverse) pair.
func TestPortGroupsLoad(t *testing.T) {
	count := func(cfg Config) int {
		p, fp := newScheduleTest(t, cfg)
		run(p, fp, 100*time.Second)
		return len(fp.pings)
	}
	every := count(Config{EveryPort: true, Reverse: sameReverse()})
	pairs := count(Config{Reverse: sameReverse()})
	// peerA: 4 ports on 2 pairs; peerB: 4 ports on 4 pairs.
	if every < 796 || every > 804 {
		t.Errorf("every port: %d pings in 100 s, want 800", every)
	}
	if pairs < 596 || pairs > 604 {
		t.Errorf("one per pair: %d pings in 100 s, want 600 (6 pairs)", pairs)
	}
}
