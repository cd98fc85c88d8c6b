package mapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
)

var (
	local = netip.MustParseAddr("198.18.1.10")
	peerA = netip.MustParseAddr("198.18.2.10")
	peerB = netip.MustParseAddr("198.18.3.10")
	peerC = netip.MustParseAddr("198.18.4.10")
	leaf1 = netip.MustParseAddr("198.18.0.1")
	leaf2 = netip.MustParseAddr("198.18.0.2")
)

func spine(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)}) }

func hops(addrs ...netip.Addr) []graph.Hop {
	h := make([]graph.Hop, len(addrs))
	for i, a := range addrs {
		h[i] = graph.Hop{Addr: a}
	}
	return h
}

// fakeClock advances only when the mapper sleeps.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

type call struct {
	peer    netip.Addr
	port    uint16
	ttls    []int
	attempt int // earlier traces of the flow: the sweep, with one peer
}

type flow struct {
	peer netip.Addr
	port uint16
}

// fakePath is the path a flow takes through a fake network: hops in TTL
// order, ending with the peer when Reached (a silent hop has a zero Addr).
type fakePath struct {
	Hops    []graph.Hop
	Reached bool
}

// fakeTracer answers probes from a path that is a function of (peer, port,
// attempt), attempt counting the earlier traces of that flow, and records
// every call (one per round of probes) and every trace; it can run a hook
// after each trace (to cancel, add peers, …). newTestMapper hooks it to the
// mapper's afterTrace.
type fakeTracer struct {
	mu      sync.Mutex
	calls   []call
	traces  []call
	attempt map[flow]int
	answer  func(peer netip.Addr, port uint16, attempt int) (fakePath, error)
	after   func(n int) // n: traces so far
}

func (f *fakeTracer) ProbeTTLs(ctx context.Context, peer netip.Addr, port uint16, ttls []int) (ProbeResult, error) {
	f.mu.Lock()
	attempt := f.attempt[flow{peer, port}]
	f.calls = append(f.calls, call{peer, port, slices.Clone(ttls), attempt})
	answer := f.answer
	f.mu.Unlock()
	var p fakePath
	var err error
	if answer != nil {
		p, err = answer(peer, port, attempt)
	} else {
		p = ecmpTrace(peer, port)
	}
	if err != nil {
		return ProbeResult{}, err
	}
	return p.probe(peer, ttls), nil
}

// probe answers ttls like a network would along p: a router, silence, or
// the peer at and beyond its distance; nothing is sent past a TTL the peer
// answered.
func (p fakePath) probe(peer netip.Addr, ttls []int) ProbeResult {
	var res ProbeResult
	ttls = slices.Clone(ttls)
	slices.Sort(ttls)
	for _, t := range slices.Compact(ttls) {
		res.ProbesSent++
		a := TTLAnswer{TTL: t}
		switch {
		case t < len(p.Hops) || (t == len(p.Hops) && !p.Reached):
			a.Hop = p.Hops[t-1]
		case p.Reached:
			a.Hop, a.Dest = graph.Hop{Addr: peer}, true
		}
		res.Answers = append(res.Answers, a)
		if a.Dest {
			break
		}
	}
	return res
}

// traceDone is the mapper's afterTrace hook.
func (f *fakeTracer) traceDone(peer netip.Addr, port uint16) {
	f.mu.Lock()
	f.traces = append(f.traces, call{peer: peer, port: port})
	if f.attempt == nil {
		f.attempt = make(map[flow]int)
	}
	f.attempt[flow{peer, port}]++
	n, after := len(f.traces), f.after
	f.mu.Unlock()
	if after != nil {
		after(n)
	}
}

func (f *fakeTracer) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeTracer) Traces() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.traces)
}

// ecmpTrace is a 4-spine fabric hashing port p onto spine p%4, the trace
// ending with the peer.
func ecmpTrace(peer netip.Addr, port uint16) fakePath {
	return fakePath{Hops: hops(leaf1, spine(int(port)%4), leaf2, peer), Reached: true}
}

// fakeSink is a graph that calls any change of hops a path change.
type fakeSink struct {
	mu      sync.Mutex
	routes  map[graph.RouteKey][]graph.Hop
	removed []netip.Addr
}

func newFakeSink() *fakeSink { return &fakeSink{routes: make(map[graph.RouteKey][]graph.Hop)} }

func idOf(h []graph.Hop) string { return routeKeyString(hopStrings(h)) }

func (s *fakeSink) SetRoute(key graph.RouteKey, h []graph.Hop) (string, *graph.PathChange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.routes[key]
	s.routes[key] = slices.Clone(h)
	if !ok || idOf(old) == idOf(h) {
		return idOf(h), nil
	}
	return idOf(h), &graph.PathChange{
		Key: key, OldRoute: idOf(old), NewRoute: idOf(h),
		OldHops: hopStrings(old), NewHops: hopStrings(h), HopDelta: len(h) - len(old),
	}
}

func (s *fakeSink) RemoveHost(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = append(s.removed, a)
	for k := range s.routes {
		if k.Src == a || k.Dst == a {
			delete(s.routes, k)
		}
	}
}

func (s *fakeSink) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.routes)
}

func testConfig(ports int) Config {
	cfg := DefaultConfig()
	cfg.LocalAddr = local
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.SrcPortEnd = cfg.SrcPortStart + uint16(ports) - 1
	cfg.Parallel = 1 // the order tests below expect one trace at a time
	return cfg
}

func newTestMapper(t *testing.T, cfg Config, tr Tracer, sink Sink) (*Mapper, *fakeClock) {
	t.Helper()
	m, err := New(cfg, tr, sink)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	clk := newFakeClock()
	m.clock = clk
	if ft, ok := tr.(*fakeTracer); ok {
		m.afterTrace = ft.traceDone
	}
	return m, clk
}

// runFor runs m until n traces (in all) have been made, then stops it and
// waits for Run to return.
func runFor(t *testing.T, m *Mapper, tr *fakeTracer, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prev := tr.after
	tr.after = func(k int) {
		if prev != nil {
			prev(k)
		}
		if k >= n {
			cancel()
		}
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not stop after %d traces (%d so far)", n, len(tr.Traces()))
	}
}

func TestValidate(t *testing.T) {
	ok := testConfig(11)
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"no local", func(c *Config) { c.LocalAddr = netip.Addr{} }, "LocalAddr"},
		{"overlap start", func(c *Config) { c.PingPort = c.SrcPortStart }, "overlaps"},
		{"overlap end", func(c *Config) { c.PingPort = c.SrcPortEnd }, "overlaps"},
		{"overlap middle", func(c *Config) { c.SrcPortStart, c.SrcPortEnd = 33430, 33440 }, "overlaps"},
		{"port zero start", func(c *Config) { c.SrcPortStart = 0 }, "1-65535"},
		{"port zero end", func(c *Config) { c.SrcPortEnd = 0 }, "1-65535"},
		{"ping port zero", func(c *Config) { c.PingPort = 0 }, "1-65535"},
		{"reversed", func(c *Config) { c.SrcPortStart, c.SrcPortEnd = 40010, 40000 }, "below"},
		{"top of range", func(c *Config) { c.SrcPortStart, c.SrcPortEnd = 65530, 65535 }, ""},
		{"interval", func(c *Config) { c.Interval = 0 }, "Interval"},
		{"jitter", func(c *Config) { c.Jitter = 1 }, "Jitter"},
		{"maxttl", func(c *Config) { c.MaxTTL = 0 }, "MaxTTL"},
		{"maxttl big", func(c *Config) { c.MaxTTL = 256 }, "MaxTTL"},
		{"maxsilent", func(c *Config) { c.MaxSilent = 0 }, "MaxSilent"},
		{"confidence", func(c *Config) { c.Confidence = 1 }, "Confidence"},
		{"timeout", func(c *Config) { c.TraceTimeout = 0 }, "TraceTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.want)
			}
			if _, err := New(c, &fakeTracer{}, newFakeSink()); err == nil {
				t.Fatalf("New accepted an invalid config")
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.PingPort != 33435 || c.SrcPortStart != 33436 || c.SrcPortEnd != 33446 || c.Interval != time.Second ||
		c.MaxTTL != 32 || c.Confidence != 0.95 {
		t.Errorf("DefaultConfig = %+v", c)
	}
}

func TestBuildRoute(t *testing.T) {
	z := netip.Addr{}
	mapped := netip.AddrFrom16(leaf1.As16())
	tests := []struct {
		name string
		hops []graph.Hop
		want []netip.Addr
	}{
		{"ends with peer", hops(leaf1, spine(0), leaf2, peerA), []netip.Addr{local, leaf1, spine(0), leaf2, peerA}},
		{"without peer", hops(leaf1, spine(0), leaf2), []netip.Addr{local, leaf1, spine(0), leaf2, peerA}},
		{"silent kept", hops(leaf1, z, leaf2, peerA), []netip.Addr{local, leaf1, z, leaf2, peerA}},
		{"silent after peer dropped", hops(leaf1, leaf2, peerA, z, z), []netip.Addr{local, leaf1, leaf2, peerA}},
		{"direct", hops(peerA), []netip.Addr{local, peerA}},
		{"empty", nil, []netip.Addr{local, peerA}},
		{"mapped v4", hops(mapped, netip.AddrFrom16(peerA.As16())), []netip.Addr{local, leaf1, peerA}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := buildRoute(local, peerA, tt.hops)
			var addrs []netip.Addr
			for _, h := range got {
				addrs = append(addrs, h.Addr)
			}
			if !slices.Equal(addrs, tt.want) {
				t.Errorf("buildRoute = %v, want %v", addrs, tt.want)
			}
		})
	}
	// The peer hop keeps its RTT.
	in := []graph.Hop{{Addr: leaf1, RTT: time.Millisecond}, {Addr: peerA, RTT: 2 * time.Millisecond}}
	if got := buildRoute(local, peerA, in); got[2].RTT != 2*time.Millisecond || got[1].RTT != time.Millisecond {
		t.Errorf("RTTs lost: %+v", got)
	}
}

func TestSweepBreadthFirstWithJitter(t *testing.T) {
	const ports, sweeps = 5, 2
	cfg := testConfig(ports)
	tr := &fakeTracer{}
	m, clk := newTestMapper(t, cfg, tr, newFakeSink())
	peers := []netip.Addr{peerA, peerB, peerC}
	for _, p := range peers {
		m.AddPeer(p)
	}
	runFor(t, m, tr, len(peers)*ports*sweeps)

	calls := tr.Traces()
	if len(calls) != len(peers)*ports*sweeps {
		t.Fatalf("%d calls, want %d", len(calls), len(peers)*ports*sweeps)
	}
	for s := range sweeps {
		var order []netip.Addr
		for i := range ports {
			block := calls[(s*ports+i)*len(peers) : (s*ports+i+1)*len(peers)]
			var got []netip.Addr
			for _, c := range block {
				if c.port != cfg.SrcPortStart+uint16(i) {
					t.Fatalf("sweep %d step %d: port %d, want %d (calls %v)", s, i, c.port, cfg.SrcPortStart+uint16(i), block)
				}
				got = append(got, c.peer)
			}
			if order == nil {
				order = got
			} else if !slices.Equal(order, got) {
				t.Errorf("sweep %d: peer order changed inside the sweep: %v then %v", s, order, got)
			}
			sorted := slices.Clone(got)
			slices.SortFunc(sorted, netip.Addr.Compare)
			if !slices.Equal(sorted, peers) {
				t.Errorf("sweep %d port %d traced %v, want each of %v once", s, i, got, peers)
			}
		}
	}

	clk.mu.Lock()
	sleeps := slices.Clone(clk.sleeps)
	clk.mu.Unlock()
	if sleeps[0] < 0 || sleeps[0] >= cfg.Interval {
		t.Errorf("initial spread %v not in [0, %v)", sleeps[0], cfg.Interval)
	}
	lo := time.Duration(float64(cfg.Interval) * (1 - cfg.Jitter))
	hi := time.Duration(float64(cfg.Interval) * (1 + cfg.Jitter))
	distinct := map[time.Duration]bool{}
	for _, d := range sleeps[1:] {
		if d < lo || d > hi {
			t.Errorf("pause %v outside [%v, %v]", d, lo, hi)
		}
		distinct[d] = true
	}
	if len(sleeps)-1 != len(calls) {
		t.Errorf("%d pauses for %d traces", len(sleeps)-1, len(calls))
	}
	if len(distinct) < len(sleeps)/2 {
		t.Errorf("pauses are not jittered: %v", sleeps)
	}

	st := m.Peers()
	if len(st) != 3 {
		t.Fatalf("Peers() = %d rows", len(st))
	}
	for _, s := range st {
		if s.PortsTraced != ports || s.PortsWithRoute != ports || s.Routes != 4 || s.LastSweep.IsZero() {
			t.Errorf("peer %v: %+v", s.Peer, s)
		}
	}
}

func TestNoJitterPausesExactly(t *testing.T) {
	cfg := testConfig(3)
	cfg.Jitter = 0
	tr := &fakeTracer{}
	m, clk := newTestMapper(t, cfg, tr, newFakeSink())
	m.AddPeer(peerA)
	runFor(t, m, tr, 3)
	for _, d := range clk.sleeps[1:] {
		if d != cfg.Interval {
			t.Errorf("pause %v, want %v", d, cfg.Interval)
		}
	}
}

func TestPeerAddedMidSweepTracedWithinOneSweep(t *testing.T) {
	const ports = 4
	cfg := testConfig(ports)
	tr := &fakeTracer{}
	m, _ := newTestMapper(t, cfg, tr, newFakeSink())
	m.AddPeer(peerA)
	tr.after = func(n int) {
		if n == 2 { // peerA traced on ports 0 and 1
			m.AddPeer(peerB)
		}
	}
	runFor(t, m, tr, 2+2*2+2*ports) // rest of the sweep, then one full sweep of both
	seen := map[uint16]bool{}
	for _, c := range tr.Traces()[:2+2*2] {
		if c.peer == peerB {
			seen[c.port] = true
		}
	}
	if len(seen) != 2 {
		t.Errorf("peerB traced on %v in the sweep it joined, want the 2 remaining ports", seen)
	}
	for _, s := range m.Peers() {
		if s.PortsTraced != ports {
			t.Errorf("peer %v traced on %d ports after one more sweep, want %d", s.Peer, s.PortsTraced, ports)
		}
	}
}

func TestAddPeerIgnoresSelfAndDuplicates(t *testing.T) {
	m, _ := newTestMapper(t, testConfig(2), &fakeTracer{}, newFakeSink())
	m.AddPeer(local)
	m.AddPeer(netip.Addr{})
	m.AddPeer(peerA)
	m.AddPeer(netip.AddrFrom16(peerA.As16()))
	if got := m.Peers(); len(got) != 1 || got[0].Peer != peerA {
		t.Errorf("Peers() = %+v, want only %v", got, peerA)
	}
}

func TestPathChangeAccounting(t *testing.T) {
	cfg := testConfig(2)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	port0 := cfg.SrcPortStart
	tr := &fakeTracer{answer: func(peer netip.Addr, port uint16, attempt int) (fakePath, error) {
		if port != port0 {
			return ecmpTrace(peer, port), nil
		}
		switch attempt {
		case 0:
			return fakePath{Hops: hops(leaf1, spine(0), leaf2, peer), Reached: true}, nil
		case 1: // lost: keep the route
			return fakePath{Hops: hops(leaf1, netip.Addr{}, netip.Addr{}, netip.Addr{})}, nil
		case 2:
			return fakePath{}, errors.New("socket closed")
		default: // spine0 down: rehashed onto spine 3
			return fakePath{Hops: hops(leaf1, spine(3), leaf2, peer), Reached: true}, nil
		}
	}}
	sink := newFakeSink()
	m, _ := newTestMapper(t, cfg, tr, sink)
	m.AddPeer(peerA)

	key := graph.RouteKey{Src: local, Dst: peerA, SrcPort: port0}
	runFor(t, m, tr, 2*2) // two sweeps: reached, then unreached
	if got := hopStrings(sink.routes[key]); got[2] != spine(0).String() {
		t.Fatalf("after a lost trace the route is %v, want the last good one via %v", got, spine(0))
	}
	runFor(t, m, tr, 2*4) // error, then the new path
	if got := hopStrings(sink.routes[key]); got[2] != spine(3).String() {
		t.Fatalf("route %v, want via %v", got, spine(3))
	}
	p := peerA.String()
	if got := testutil.ToFloat64(m.changes.WithLabelValues(p)); got != 1 {
		t.Errorf("dnms_path_changes_total = %v, want 1", got)
	}
	for result, want := range map[string]float64{ResultReached: 6, ResultUnreached: 1, ResultError: 1} {
		if got := testutil.ToFloat64(m.traces.WithLabelValues(p, result)); got != want {
			t.Errorf("dnms_traces_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	// 4 probes a trace (no group reaches 6 flows with 2 ports), none for
	// the trace that failed.
	if got := testutil.ToFloat64(m.probes.WithLabelValues(p)); got != 7*4 {
		t.Errorf("dnms_trace_probes_total = %v, want 28", got)
	}
	st := m.Peers()[0]
	if st.PathChanges != 1 || len(st.FailingPorts) != 0 {
		t.Errorf("status %+v", st)
	}
	rm := m.RouteMap()
	if len(rm) != 2 || rm[0].SrcPort != port0 || rm[0].Hops[2] != spine(3).String() || rm[0].Src != local || rm[0].Dst != peerA {
		t.Errorf("RouteMap = %+v", rm)
	}
	// The metrics are registered under their house-style names.
	n, err := testutil.GatherAndCount(reg, "dnms_path_changes_total", "dnms_traces_total", "dnms_trace_probes_total",
		"dnms_mapper_hops_total", "dnms_mapper_routes", "dnms_mapper_confident", "dnms_mapper_sweep_duration_seconds")
	if err != nil || n != 1+3+1+1+1+1+1 {
		t.Errorf("gathered %d series (%v)", n, err)
	}
}

func TestFailingPortsReported(t *testing.T) {
	cfg := testConfig(3)
	tr := &fakeTracer{answer: func(peer netip.Addr, port uint16, attempt int) (fakePath, error) {
		if port == cfg.SrcPortStart+1 {
			return fakePath{Hops: hops(leaf1)}, nil
		}
		return ecmpTrace(peer, port), nil
	}}
	m, _ := newTestMapper(t, cfg, tr, newFakeSink())
	m.AddPeer(peerA)
	runFor(t, m, tr, 3)
	st := m.Peers()[0]
	if st.PortsTraced != 3 || st.PortsWithRoute != 2 || !slices.Equal(st.FailingPorts, []uint16{cfg.SrcPortStart + 1}) {
		t.Errorf("status %+v", st)
	}
}

func TestRemovePeer(t *testing.T) {
	cfg := testConfig(2)
	cfg.Registerer = prometheus.NewRegistry()
	sink := newFakeSink()
	var m *Mapper
	tr := &fakeTracer{}
	tr.answer = func(peer netip.Addr, port uint16, attempt int) (fakePath, error) {
		// peerB leaves while its second sweep's first trace is in flight.
		if peer == peerB && attempt == 1 {
			m.RemovePeer(peerB)
		}
		return ecmpTrace(peer, port), nil
	}
	m, _ = newTestMapper(t, cfg, tr, sink)
	m.AddPeer(peerA)
	m.AddPeer(peerB)
	runFor(t, m, tr, 2*2+2) // one sweep, then two traces of the next
	if !slices.Contains(sink.removed, peerB) {
		t.Errorf("RemoveHost(%v) not called: %v", peerB, sink.removed)
	}
	for k := range sink.routes {
		if k.Dst == peerB {
			t.Errorf("route %v to removed peer left in the sink (in-flight trace not discarded)", k)
		}
	}
	for _, e := range m.RouteMap() {
		if e.Dst == peerB {
			t.Errorf("RouteMap still lists %v", e)
		}
	}
	if st := m.Peers(); len(st) != 1 || st[0].Peer != peerA {
		t.Errorf("Peers() = %+v", st)
	}
	if n := testutil.CollectAndCount(m.traces); n != 1 {
		t.Errorf("%d dnms_traces_total series after removal, want 1 (peerA reached)", n)
	}
}

func TestRunStopsPromptly(t *testing.T) {
	cfg := testConfig(11)
	cfg.Interval = time.Hour
	wait := func(done <-chan error, what string) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil on cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Run did not stop %s", what)
		}
	}
	// Real clock: cancel during the initial spread (up to an hour).
	m, err := New(cfg, &fakeTracer{}, newFakeSink())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	cancel()
	wait(done, "on cancel")

	// A peer and a trace that blocks until its context ends: cancel mid-trace.
	cfg.Interval = time.Millisecond
	cfg.TraceTimeout = time.Hour
	tr := &ctxTracer{started: make(chan struct{}, 100)}
	m2, err := New(cfg, tr, newFakeSink())
	if err != nil {
		t.Fatal(err)
	}
	m2.AddPeer(peerA)
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- m2.Run(ctx2) }()
	<-tr.started
	cancel2()
	wait(done, "during a trace")
	if st := m2.Peers()[0]; st.PortsTraced != 0 {
		t.Errorf("a trace cut by shutdown was recorded: %+v", st)
	}
}

// ctxTracer blocks until its context is done, like a trace whose probes are
// all lost.
type ctxTracer struct{ started chan struct{} }

func (c *ctxTracer) ProbeTTLs(ctx context.Context, peer netip.Addr, port uint16, ttls []int) (ProbeResult, error) {
	c.started <- struct{}{}
	<-ctx.Done()
	return ProbeResult{}, fmt.Errorf("trace %v:%d: %w", peer, port, ctx.Err())
}

func TestRegisterTwiceFails(t *testing.T) {
	cfg := testConfig(2)
	cfg.Registerer = prometheus.NewRegistry()
	m, err := New(cfg, &fakeTracer{}, newFakeSink())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, &fakeTracer{}, newFakeSink()); err == nil {
		t.Error("second mapper on one registry: no error")
	}
	m.Close()
	if _, err := New(cfg, &fakeTracer{}, newFakeSink()); err != nil {
		t.Errorf("after Close: %v", err)
	}
}

// Through the real graph: a silent hop in an otherwise identical path is not
// a change and the route map keeps the known address; a different spine is.
func TestPathChangesThroughGraph(t *testing.T) {
	cfg := testConfig(1)
	cfg.Registerer = prometheus.NewRegistry()
	z := netip.Addr{}
	traces := [][]netip.Addr{
		{leaf1, spine(0), leaf2, peerA},
		{leaf1, z, leaf2, peerA}, // spine 0 rate-limited its ICMP once
		{leaf1, spine(0), z, peerA},
		{leaf1, spine(2), leaf2, peerA}, // rehashed
	}
	tr := &fakeTracer{answer: func(peer netip.Addr, port uint16, attempt int) (fakePath, error) {
		return fakePath{Hops: hops(traces[min(attempt, len(traces)-1)]...), Reached: true}, nil
	}}
	g := graph.New(graph.DefaultConfig())
	m, _ := newTestMapper(t, cfg, tr, g)
	m.AddPeer(peerA)
	want := func(n float64, via netip.Addr) {
		t.Helper()
		if got := testutil.ToFloat64(m.changes.WithLabelValues(peerA.String())); got != n {
			t.Errorf("dnms_path_changes_total = %v, want %v", got, n)
		}
		rm := m.RouteMap()
		if len(rm) != 1 || !slices.Equal(rm[0].Hops, hopStrings(buildRoute(local, peerA, hops(leaf1, via, leaf2)))) {
			t.Errorf("route map %+v, want via %v with every address known", rm, via)
		}
		if id, ok := g.RouteOf(graph.RouteKey{Src: local, Dst: peerA, SrcPort: cfg.SrcPortStart}); !ok || id != rm[0].RouteID {
			t.Errorf("graph maps the key to %q (%v), route map says %q", id, ok, rm[0].RouteID)
		}
	}
	runFor(t, m, tr, 3)
	want(0, spine(0))
	runFor(t, m, tr, 4)
	want(1, spine(2))
	if st := m.Peers()[0]; st.PathChanges != 1 || st.Routes != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestBuildRouteIPv6(t *testing.T) {
	l6, r6, p6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00:1::1"), netip.MustParseAddr("fd00::2")
	got := hopStrings(buildRoute(l6, p6, hops(r6, netip.Addr{}, p6)))
	if want := []string{"fd00::1", "fd00:1::1", "*", "fd00::2"}; !slices.Equal(got, want) {
		t.Errorf("buildRoute v6 = %v, want %v", got, want)
	}
}

// Whatever hops a tracer reports, the route starts at the local host, ends at
// the peer, names the peer nowhere else, and coverage accepts it.
func FuzzBuildRoute(f *testing.F) {
	f.Add([]byte{1, 0, 2, 3}, uint8(2))
	f.Add([]byte{3, 3, 0, 0, 0}, uint8(5))
	f.Fuzz(func(t *testing.T, raw []byte, n uint8) {
		pool := []netip.Addr{{}, leaf1, spine(0), peerA, local, netip.AddrFrom16(peerA.As16())}
		var hs []graph.Hop
		for _, b := range raw {
			hs = append(hs, graph.Hop{Addr: pool[int(b)%len(pool)]})
		}
		r := buildRoute(local, peerA, hs)
		if r[0].Addr != local || r[len(r)-1].Addr != peerA {
			t.Fatalf("route %v does not run local → peer", hopStrings(r))
		}
		for _, h := range r[:len(r)-1] {
			if h.Addr == peerA {
				t.Fatalf("peer inside route %v", hopStrings(r))
			}
		}
		routes := make([][]string, int(n)%16)
		for i := range routes {
			routes[i] = hopStrings(r)
		}
		_ = coverage(routes, 0.95)
	})
}
