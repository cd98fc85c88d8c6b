package mapper

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
)

var leaf3 = netip.MustParseAddr("198.18.0.3")

// fakeFIB answers NextHops with n, or err, and counts lookups.
type fakeFIB struct {
	mu    sync.Mutex
	n     int
	err   error
	calls int
}

func (f *fakeFIB) NextHops(netip.Addr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.n, f.err
}

// probed returns the TTLs probed on port in its trace number attempt (the
// sweep, with one peer).
func probed(calls []call, port uint16, attempt int) []int {
	var out []int
	for _, c := range calls {
		if c.port == port && c.attempt == attempt {
			out = append(out, c.ttls...)
		}
	}
	slices.Sort(out)
	return out
}

// inferMapper is a mapper over n ports to peerA with an 8-sweep-capable
// fake tracer answering from path (ecmpTrace when nil).
func inferMapper(t *testing.T, ports int, mod func(*Config), path func(port uint16, attempt int) fakePath) (*Mapper, *fakeTracer, *fakeSink) {
	t.Helper()
	cfg := testConfig(ports)
	cfg.Registerer = prometheus.NewRegistry()
	if mod != nil {
		mod(&cfg)
	}
	tr := &fakeTracer{}
	if path != nil {
		tr.answer = func(peer netip.Addr, port uint16, attempt int) (fakePath, error) { return path(port, attempt), nil }
	}
	sink := newFakeSink()
	m, _ := newTestMapper(t, cfg, tr, sink)
	m.AddPeer(peerA)
	return m, tr, sink
}

// checkRoutes fails unless every port's stored route is the one a full
// trace of path gives.
func checkRoutes(t *testing.T, m *Mapper, sink *fakeSink, path func(port uint16) fakePath) {
	t.Helper()
	for port := m.cfg.SrcPortStart; port <= m.cfg.SrcPortEnd; port++ {
		want := hopStrings(buildRoute(local, peerA, path(port).Hops))
		got := hopStrings(sink.routes[graph.RouteKey{Src: local, Dst: peerA, SrcPort: port}])
		if !slices.Equal(got, want) {
			t.Errorf("port %d: route %v, a full trace gives %v", port, got, want)
		}
	}
}

func hopsBy(m *Mapper, source string) float64 {
	return testutil.ToFloat64(m.hops.WithLabelValues(peerA.String(), source))
}

// MDA node control: a group is confirmed by 6 distinct flows (n_1 at 95%),
// not 5. TTL 1 (behind the local host) and TTL 4 (behind leaf2) confirm;
// the spine group never does (4 successors). In the first sweep only the
// peer itself is inferred for ports never probed there; a hop into a router
// is inferred only for ports that probed it before (second sweep).
func TestNodeControlConfirmsAtSixFlows(t *testing.T) {
	const ports = 11
	m, tr, sink := inferMapper(t, ports, nil, nil)
	runFor(t, m, tr, ports)
	calls := tr.Calls()
	start := m.cfg.SrcPortStart
	// The first trace knows no distance: one TTL per round.
	if first := calls[:4]; !slices.EqualFunc(first, []call{{ttls: []int{1}}, {ttls: []int{2}}, {ttls: []int{3}}, {ttls: []int{4}}},
		func(a, b call) bool { return slices.Equal(a.ttls, b.ttls) }) {
		t.Errorf("first trace: %+v, want TTL 1, 2, 3, 4 one at a time", first)
	}
	for i := range ports {
		port := start + uint16(i)
		want := []int{1, 2, 3, 4}
		if i >= 6 { // 6 flows (ports 0-5) confirmed the peer behind leaf2; leaf1 at TTL 1 is not theirs yet
			want = []int{1, 2, 3}
		}
		if got := probed(calls, port, 0); !slices.Equal(got, want) {
			t.Errorf("port index %d probed TTLs %v, want %v", i, got, want)
		}
	}
	checkRoutes(t, m, sink, func(port uint16) fakePath { return ecmpTrace(peerA, port) })
	if got := hopsBy(m, HopMDA); got != 5 {
		t.Errorf("%v hops inferred, want 5 (TTL 4 of 5 ports)", got)
	}
	if got, want := testutil.ToFloat64(m.probes.WithLabelValues(peerA.String())), float64(4+5*4+5*3); got != want {
		t.Errorf("dnms_trace_probes_total = %v, want %v", got, want)
	}
	// Second sweep: every port has probed TTL 1 once; those not due for a
	// full verification infer it, except the group's verifier.
	runFor(t, m, tr, ports)
	inferred1 := 0
	for i := range ports {
		if !slices.Contains(probed(tr.Calls(), start+uint16(i), 1), 1) {
			inferred1++
		}
	}
	if inferred1 == 0 {
		t.Error("second sweep: TTL 1 probed on every port although the group is confirmed and each port saw leaf1")
	}
	checkRoutes(t, m, sink, func(port uint16) fakePath { return ecmpTrace(peerA, port) })
}

// A port that never probed a confirmed group's TTL is probed there, not
// inferred: 6 agreeing flows happen by chance 3% of the time behind two
// next hops, and a flow put on the wrong link would blame it.
func TestNodeControlNeverGuessesAnUnprobedFlow(t *testing.T) {
	const ports = 11
	start := testConfig(ports).SrcPortStart
	// Two spines; by chance the first 6 ports all hash to spine A, the rest
	// to spine B.
	path := func(port uint16, _ int) fakePath {
		s := 1
		if port >= start+6 {
			s = 2
		}
		return fakePath{Hops: hops(leaf1, spine(s), leaf2, peerA), Reached: true}
	}
	m, tr, sink := inferMapper(t, ports, nil, path)
	runFor(t, m, tr, ports)
	for i := 6; i < ports; i++ {
		if got := probed(tr.Calls(), start+uint16(i), 0); !slices.Contains(got, 2) {
			t.Errorf("port index %d: TTL 2 not probed (%v): its spine would have been guessed", i, got)
		}
	}
	checkRoutes(t, m, sink, func(port uint16) fakePath { return path(port, 0) })
}

// The same port traced again is the same flow: 5 ports never confirm a
// group however many sweeps they make.
func TestNodeControlCountsDistinctFlows(t *testing.T) {
	const ports, sweeps = 5, 6
	m, tr, _ := inferMapper(t, ports, nil, nil)
	runFor(t, m, tr, ports*sweeps)
	for s := range sweeps {
		for i := range ports {
			port := m.cfg.SrcPortStart + uint16(i)
			if got := probed(tr.Calls(), port, s); !slices.Equal(got, []int{1, 2, 3, 4}) {
				t.Errorf("sweep %d port index %d probed %v, want every TTL (5 flows < 6)", s, i, got)
			}
		}
	}
	if got := hopsBy(m, HopMDA); got != 0 {
		t.Errorf("%v hops inferred from 5 flows", got)
	}
}

// A group whose flows showed two successors is branching: every port in it
// is probed at that TTL, in every sweep.
func TestNodeControlBranching(t *testing.T) {
	const ports, sweeps = 11, 3
	odd := func(port uint16) bool { return port == testConfig(ports).SrcPortStart+3 }
	path := func(port uint16) fakePath {
		if odd(port) { // leaf2 sends this flow through leaf3
			return fakePath{Hops: hops(leaf1, spine(int(port)%4), leaf2, leaf3, peerA), Reached: true}
		}
		return ecmpTrace(peerA, port)
	}
	m, tr, sink := inferMapper(t, ports, nil, func(port uint16, _ int) fakePath { return path(port) })
	runFor(t, m, tr, ports*sweeps)
	for s := range sweeps {
		for i := range ports {
			port := m.cfg.SrcPortStart + uint16(i)
			if got := probed(tr.Calls(), port, s); !slices.Contains(got, 4) {
				t.Errorf("sweep %d port index %d probed %v: TTL 4 is behind a branching leaf2", s, i, got)
			}
		}
	}
	checkRoutes(t, m, sink, path)
}

// Inferred hops are re-probed: in every sweep each confirmed group is probed
// on at least one port, and every port with inferred hops is fully probed
// at least once every VerifyEvery sweeps; routes stay exact and unchanged.
func TestNodeControlRotationReverifies(t *testing.T) {
	const ports, verify = 11, 3
	const sweeps = 1 + 3*verify
	m, tr, sink := inferMapper(t, ports, func(c *Config) { c.VerifyEvery = verify }, nil)
	runFor(t, m, tr, ports*sweeps)
	calls := tr.Calls()
	start := m.cfg.SrcPortStart
	lastFull := map[uint16]int{}
	for s := 1; s < sweeps; s++ {
		ttl1, ttl4, perSweep := 0, 0, 0
		for i := range ports {
			port := start + uint16(i)
			got := probed(calls, port, s)
			perSweep += len(got)
			if slices.Contains(got, 1) {
				ttl1++
			}
			if slices.Contains(got, 4) {
				ttl4++
			}
			if slices.Equal(got, []int{1, 2, 3, 4}) {
				lastFull[port] = s
			}
			if s-lastFull[port] >= verify {
				// Turns come every VerifyEvery sweeps.
				t.Errorf("sweep %d: port index %d not fully probed since sweep %d", s, i, lastFull[port])
			}
		}
		if ttl1 == 0 || ttl4 == 0 {
			t.Errorf("sweep %d: %d ports probed TTL 1 and %d TTL 4, want at least one each", s, ttl1, ttl4)
		}
		if perSweep >= 4*ports {
			t.Errorf("sweep %d: %d probes, no inference", s, perSweep)
		}
	}
	checkRoutes(t, m, sink, func(port uint16) fakePath { return ecmpTrace(peerA, port) })
	if got := testutil.ToFloat64(m.changes.WithLabelValues(peerA.String())); got != 0 {
		t.Errorf("%v path changes in a network that did not change", got)
	}
}

// A flow whose hop behind a confirmed group changes while that hop is
// inferred: the change shows within VerifyEvery sweeps, and the group turns
// branching (every port probes it in the next sweep).
func TestNodeControlChangeAtInferredHop(t *testing.T) {
	const ports, verify = 11, 4
	start := testConfig(ports).SrcPortStart
	target := start + 8 // inferred TTL 4 from the first sweep on
	path := func(port uint16, attempt int) fakePath {
		if port == target && attempt >= 1 {
			return fakePath{Hops: hops(leaf1, spine(int(port)%4), leaf2, leaf3, peerA), Reached: true}
		}
		return ecmpTrace(peerA, port)
	}
	m, tr, sink := inferMapper(t, ports, func(c *Config) { c.VerifyEvery = verify }, path)
	runFor(t, m, tr, ports*(1+verify+1))
	calls := tr.Calls()
	key := graph.RouteKey{Src: local, Dst: peerA, SrcPort: target}
	if !slices.Contains(probed(calls, target, 0), 3) || slices.Contains(probed(calls, target, 0), 4) {
		t.Fatalf("setup: target port probed %v in sweep 0, want TTL 4 inferred", probed(calls, target, 0))
	}
	detected := -1
	for s := 1; s <= verify; s++ {
		if slices.Contains(probed(calls, target, s), 4) {
			detected = s
			break
		}
	}
	if detected < 0 {
		t.Fatalf("TTL 4 of the changed flow not probed within %d sweeps: %v", verify, calls)
	}
	if got := hopStrings(sink.routes[key]); !slices.Contains(got, leaf3.String()) {
		t.Errorf("route %v after the flow was re-probed in sweep %d, want via %v", got, detected, leaf3)
	}
	if got := testutil.ToFloat64(m.changes.WithLabelValues(peerA.String())); got != 1 {
		t.Errorf("dnms_path_changes_total = %v, want 1", got)
	}
	for i := range ports {
		port := start + uint16(i)
		if got := probed(calls, port, detected+1); !slices.Contains(got, 4) {
			t.Errorf("sweep %d after the disagreement: port index %d probed %v, want TTL 4", detected+1, i, got)
		}
	}
	checkRoutes(t, m, sink, func(port uint16) fakePath { return path(port, 1) })
}

// A peer that goes dark behind a confirmed group is seen in the sweep it
// happens: the group is probed on one port, its silence drops the
// confirmation, and the ports after it probe the peer too. By the next
// sweep no port reports the peer reached.
func TestNodeControlPeerDownNotHidden(t *testing.T) {
	const ports = 11
	path := func(port uint16, attempt int) fakePath {
		if attempt >= 2 {
			return fakePath{Hops: hops(leaf1, spine(int(port)%4), leaf2)}
		}
		return ecmpTrace(peerA, port)
	}
	m, tr, _ := inferMapper(t, ports, nil, path)
	unreached := func() float64 { return testutil.ToFloat64(m.traces.WithLabelValues(peerA.String(), ResultUnreached)) }
	runFor(t, m, tr, ports*3)
	if got := unreached(); got < 1 {
		t.Errorf("no unreached trace in the sweep the peer went dark")
	}
	runFor(t, m, tr, ports*4)
	st := m.Peers()[0]
	if len(st.FailingPorts) != ports {
		t.Errorf("failing ports %v a sweep after the peer went dark, want all %d", st.FailingPorts, ports)
	}
}

// A group behind a silent hop is never confirmed: with every spine silent,
// TTL 3 is probed on every port, while the peer behind leaf2 is inferred.
func TestNodeControlSilentPredecessor(t *testing.T) {
	const ports = 11
	path := func(port uint16, _ int) fakePath {
		return fakePath{Hops: hops(leaf1, netip.Addr{}, leaf2, peerA), Reached: true}
	}
	m, tr, sink := inferMapper(t, ports, nil, path)
	runFor(t, m, tr, ports*3)
	for s := range 3 {
		for i := range ports {
			got := probed(tr.Calls(), m.cfg.SrcPortStart+uint16(i), s)
			if !slices.Contains(got, 3) || !slices.Contains(got, 2) {
				t.Errorf("sweep %d port index %d probed %v, want TTL 2 (silent successor) and 3 (silent predecessor)", s, i, got)
			}
		}
	}
	checkRoutes(t, m, sink, func(port uint16) fakePath { return path(port, 0) })
}

// With a single next hop in the FIB, TTL 1 is probed once per peer and sweep
// and reused; with a multipath route or a failed lookup it is MDA's like any
// TTL.
func TestFIBSingleNextHopReuse(t *testing.T) {
	const ports, sweeps = 11, 3
	for _, tc := range []struct {
		name   string
		fib    *fakeFIB
		single bool
	}{
		{"single", &fakeFIB{n: 1}, true},
		{"multipath", &fakeFIB{n: 2}, false},
		{"unknown", &fakeFIB{err: errors.New("netlink: no route")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, tr, sink := inferMapper(t, ports, func(c *Config) { c.FIB = tc.fib }, nil)
			runFor(t, m, tr, ports*sweeps)
			for s := range sweeps {
				var ttl1 []int
				for i := range ports {
					if slices.Contains(probed(tr.Calls(), m.cfg.SrcPortStart+uint16(i), s), 1) {
						ttl1 = append(ttl1, i)
					}
				}
				switch {
				case tc.single && !slices.Equal(ttl1, []int{0}):
					t.Errorf("sweep %d: port indexes %v probed TTL 1, want only the first", s, ttl1)
				case !tc.single && s == 0 && len(ttl1) != ports:
					t.Errorf("sweep 0: port indexes %v probed TTL 1, want every port (none has probed it before)", ttl1)
				}
			}
			if tc.fib.calls != sweeps {
				t.Errorf("%d FIB lookups in %d sweeps, want one per sweep", tc.fib.calls, sweeps)
			}
			if got := hopsBy(m, HopFIB); tc.single && got != (ports-1)*sweeps || !tc.single && got != 0 {
				t.Errorf("%v TTL-1 hops from the FIB", got)
			}
			checkRoutes(t, m, sink, func(port uint16) fakePath { return ecmpTrace(peerA, port) })
		})
	}
}

// With a single next hop whose TTL-1 probe went unanswered, the next port
// probes TTL 1 again: silence is not reused.
func TestFIBSilentFirstHopNotReused(t *testing.T) {
	const ports = 3
	start := testConfig(ports).SrcPortStart
	path := func(port uint16, _ int) fakePath {
		if port == start {
			return fakePath{Hops: hops(netip.Addr{}, spine(0), leaf2, peerA), Reached: true}
		}
		return ecmpTrace(peerA, port)
	}
	m, tr, _ := inferMapper(t, ports, func(c *Config) { c.FIB = &fakeFIB{n: 1} }, path)
	runFor(t, m, tr, ports)
	for i, want := range []bool{true, true, false} {
		if got := slices.Contains(probed(tr.Calls(), start+uint16(i), 0), 1); got != want {
			t.Errorf("port index %d probed TTL 1: %v, want %v", i, got, want)
		}
	}
}

// No probe goes past a TTL known to be the peer's: the first trace goes one
// TTL at a time, later ones stop at the known distance, a longer path is
// followed one TTL at a time, and a peer gone dark costs nothing beyond its
// distance.
func TestNoOvershoot(t *testing.T) {
	const ports = 2
	start := testConfig(ports).SrcPortStart
	path := func(port uint16, attempt int) fakePath {
		switch {
		case port == start+1 && attempt == 1: // one hop longer
			return fakePath{Hops: hops(leaf1, spine(0), spine(1), leaf2, peerA), Reached: true}
		case port == start+1 && attempt >= 2: // dark after leaf1
			return fakePath{Hops: hops(leaf1)}
		}
		return ecmpTrace(peerA, port)
	}
	m, tr, _ := inferMapper(t, ports, nil, path)
	runFor(t, m, tr, ports*3)
	var got [][]int
	for _, c := range tr.Calls() {
		got = append(got, c.ttls)
	}
	want := [][]int{
		{1}, {2}, {3}, {4}, // sweep 0, first port: distance unknown
		{1, 2, 3, 4},      // second port: the peer is at 4
		{1, 2, 3, 4},      // sweep 1
		{1, 2, 3, 4}, {5}, // a router at 4: the path is longer
		{1, 2, 3, 4},    // sweep 2
		{1, 2, 3, 4, 5}, // its own distance is 5; silence there: no more
	}
	if !slices.EqualFunc(got, want, slices.Equal[[]int]) {
		t.Errorf("TTLs per round:\n%v\nwant\n%v", got, want)
	}
	rm := m.RouteMap()
	if len(rm[1].Hops) != 6 {
		t.Errorf("port 1 route %v, want the longer path kept after it went dark", rm[1].Hops)
	}
	if st := m.Peers()[0]; !slices.Equal(st.FailingPorts, []uint16{start + 1}) {
		t.Errorf("failing ports %v", st.FailingPorts)
	}
}
