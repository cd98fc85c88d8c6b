package pinger

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/probe"
)

type fakeProber struct {
	mu    sync.Mutex
	pings []flowKey
	at    []time.Time
	res   chan probe.Result
	clock func() time.Time
}

func (f *fakeProber) Ping(peer netip.Addr, port uint16) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pings = append(f.pings, flowKey{peer, port})
	if f.clock != nil {
		f.at = append(f.at, f.clock())
	}
	return uint64(len(f.pings)), nil
}
func (f *fakeProber) Results() <-chan probe.Result { return f.res }

type fakeRoutes struct {
	mu   sync.Mutex
	keys []graph.RouteKey
}

func (r *fakeRoutes) RouteKeys() []graph.RouteKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]graph.RouteKey(nil), r.keys...)
}

type fakeSink struct {
	mu      sync.Mutex
	samples map[graph.RouteKey][]graph.Sample
}

func (s *fakeSink) AddSample(k graph.RouteKey, smp graph.Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.samples == nil {
		s.samples = map[graph.RouteKey][]graph.Sample{}
	}
	s.samples[k] = append(s.samples[k], smp)
}

func (s *fakeSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.samples {
		n += len(v)
	}
	return n
}

var (
	local = netip.MustParseAddr("198.18.0.1")
	peerA = netip.MustParseAddr("198.18.0.2")
	peerB = netip.MustParseAddr("198.18.0.3")
)

func keys() []graph.RouteKey {
	var ks []graph.RouteKey
	for _, d := range []netip.Addr{peerA, peerB} {
		for p := uint16(33436); p < 33440; p++ {
			ks = append(ks, graph.RouteKey{Src: local, Dst: d, SrcPort: p})
		}
	}
	// Someone else's route (aggregator graph): not ours to ping.
	return append(ks, graph.RouteKey{Src: peerB, Dst: peerA, SrcPort: 33436})
}

func newTest(t *testing.T) (*Pinger, *fakeProber, *fakeRoutes, *fakeSink, *prometheus.Registry) {
	t.Helper()
	fp := &fakeProber{res: make(chan probe.Result, 100)}
	fr := &fakeRoutes{keys: keys()}
	fs := &fakeSink{}
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Local, cfg.Registerer = local, reg
	p, err := New(cfg, fp, fr, fs)
	if err != nil {
		t.Fatal(err)
	}
	return p, fp, fr, fs, reg
}

// The schedule, driven with a synthetic clock: every flow is pinged once per
// RouteInterval on average, never more than RouteInterval+PeerInterval apart,
// and flows are spread over the interval rather than bursting together.
func TestSchedule(t *testing.T) {
	p, fp, _, _, _ := newTest(t)
	now := time.Unix(1000, 0)
	fp.clock = func() time.Time { return now }
	const visits = 1000 // 100 s at 100 ms
	for range visits {
		p.visit(now)
		now = now.Add(p.cfg.PeerInterval)
	}
	per := map[flowKey][]time.Time{}
	for i, k := range fp.pings {
		per[k] = append(per[k], fp.at[i])
	}
	if len(per) != 8 {
		t.Fatalf("%d flows pinged, want 8 (the foreign route must not be pinged)", len(per))
	}
	firstTicks := map[time.Time]bool{}
	for k, ts := range per {
		if n := len(ts); n < 99 || n > 101 {
			t.Errorf("flow %v pinged %d times in 100 s, want 100±1", k, n)
		}
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap > p.cfg.RouteInterval+p.cfg.PeerInterval || gap < p.cfg.RouteInterval-p.cfg.PeerInterval {
				t.Errorf("flow %v: gap %v", k, gap)
			}
		}
		firstTicks[ts[0]] = true
	}
	if len(firstTicks) < 3 {
		t.Errorf("8 flows started in only %d distinct visits: not staggered", len(firstTicks))
	}
}

func TestScheduleCatchUp(t *testing.T) {
	p, fp, _, _, _ := newTest(t)
	now := time.Unix(1000, 0)
	for range 20 {
		p.visit(now)
		now = now.Add(p.cfg.PeerInterval)
	}
	n := len(fp.pings)
	// The process stalls for a minute: one ping per flow, not sixty.
	now = now.Add(time.Minute)
	p.visit(now)
	if got := len(fp.pings) - n; got != 8 {
		t.Fatalf("after a stall: %d pings, want 8", got)
	}
}

func TestResults(t *testing.T) {
	p, fp, _, fs, reg := newTest(t)
	p.visit(time.Now().Add(2 * time.Second)) // every flow due
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	res := []probe.Result{
		{Peer: peerA, SrcPort: 33436, Sample: graph.Sample{Seq: 1, RTT: 150 * time.Microsecond, Source: "kernel"}},
		{Peer: peerA, SrcPort: 33437, Sample: graph.Sample{Seq: 1, Lost: true, Dir: graph.LossForward}},
		{Peer: peerA, SrcPort: 33437, Sample: graph.Sample{Seq: 2, Lost: true, Dir: graph.LossReverse}},
		{Peer: peerB, SrcPort: 33436, Sample: graph.Sample{Seq: 1, Lost: true}},
		{Peer: peerB, SrcPort: 9, Sample: graph.Sample{Seq: 1}}, // never pinged: ignored
	}
	for _, r := range res {
		fp.res <- r
	}
	deadline := time.Now().Add(5 * time.Second)
	for fs.count() < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the sink with a deadline
	}
	if got := fs.count(); got != 4 {
		t.Fatalf("%d samples, want 4", got)
	}
	fs.mu.Lock()
	if s := fs.samples[graph.RouteKey{Src: local, Dst: peerA, SrcPort: 33436}]; len(s) != 1 || s[0].RTT != 150*time.Microsecond {
		t.Errorf("samples for A/33436: %+v", s)
	}
	fs.mu.Unlock()
	if got := testutil.ToFloat64(p.lost.WithLabelValues(peerA.String(), "forward")); got != 1 {
		t.Errorf("forward lost %v", got)
	}
	if got := testutil.ToFloat64(p.lost.WithLabelValues(peerA.String(), "reverse")); got != 1 {
		t.Errorf("reverse lost %v", got)
	}
	if got := testutil.ToFloat64(p.lost.WithLabelValues(peerB.String(), "unknown")); got != 1 {
		t.Errorf("unknown lost %v", got)
	}
	if got := testutil.ToFloat64(p.received.WithLabelValues(peerA.String())); got != 1 {
		t.Errorf("received %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "dnms_probe_rtt_seconds"); err != nil || n != 1 {
		t.Errorf("rtt series %d, %v", n, err)
	}
}

func TestPeerLeaves(t *testing.T) {
	p, _, fr, _, reg := newTest(t)
	now := time.Unix(1000, 0)
	p.visit(now.Add(2 * time.Second))
	fr.mu.Lock()
	fr.keys = fr.keys[:4] // peer B gone
	fr.mu.Unlock()
	p.visit(now.Add(3 * time.Second))
	p.visit(now.Add(30 * time.Second))
	n, err := testutil.GatherAndCount(reg, "dnms_probes_sent_total")
	if err != nil || n != 1 {
		t.Fatalf("sent series %d (%v), want 1 (peer B's deleted)", n, err)
	}
}

func TestNewRequires(t *testing.T) {
	if _, err := New(DefaultConfig(), nil, &fakeRoutes{}, &fakeSink{}); err == nil {
		t.Fatal("nil prober accepted")
	}
}

// The real parts satisfy the interfaces.
var (
	_ Prober = (*probe.Engine)(nil)
	_ Routes = (*graph.Graph)(nil)
	_ Sink   = (*graph.Graph)(nil)
)
