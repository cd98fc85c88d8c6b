package mapper

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/loader"
)

// labTracer is a Paris traceroute built on lab.ProbeHop (one UDP probe per
// TTL, same 5-tuple, ICMP read from a raw socket): a real trace through the
// real fabric, used where a test needs no dnms on the peer.
type labTracer struct {
	f        *lab.Fabric
	host     string
	pingPort uint16
	timeout  time.Duration
}

func (lt *labTracer) ProbeTTLs(ctx context.Context, peer netip.Addr, port uint16, ttls []int) (ProbeResult, error) {
	return labProbeTTLs(ctx, lt.f, lt.host, peer, port, lt.pingPort, ttls, lt.timeout)
}

// labProbeTTLs probes each TTL with lab.ProbeHop, in order, stopping at the
// peer.
func labProbeTTLs(ctx context.Context, f *lab.Fabric, host string, peer netip.Addr, sport, dport uint16, ttls []int, timeout time.Duration) (ProbeResult, error) {
	var res ProbeResult
	for _, ttl := range ttls {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		a, err := f.ProbeHop(host, peer, sport, dport, ttl, timeout)
		res.ProbesSent++
		if err != nil && !errors.Is(err, lab.ErrNoAnswer) {
			return res, err
		}
		ans := TTLAnswer{TTL: ttl, Hop: graph.Hop{Addr: a}, Dest: a == peer}
		res.Answers = append(res.Answers, ans)
		if ans.Dest {
			break
		}
	}
	return res, nil
}

// labPair is one ordered host pair on different leaves.
type labPair struct {
	src, dst lab.Host
	truth    [][]string // full routes, endpoints included
}

func labPairs(t *testing.T, f *lab.Fabric) []labPair {
	t.Helper()
	hosts := map[string]lab.Host{}
	for _, h := range f.Hosts {
		hosts[h.Name] = h
	}
	var out []labPair
	for _, ps := range f.GroundTruth().Pairs {
		src, dst := hosts[ps.Src], hosts[ps.Dst]
		if src.Leaf == dst.Leaf {
			continue
		}
		p := labPair{src: src, dst: dst}
		for _, path := range ps.Paths {
			r := []string{src.Addr.String()}
			for _, a := range path {
				r = append(r, a.String())
			}
			p.truth = append(p.truth, r)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatal("lab has no host pairs on different leaves")
	}
	return out
}

// labMapper is a Mapper tracing from one lab host into a real graph.
type labMapper struct {
	m      *Mapper
	g      *graph.Graph
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startLabMapper(t *testing.T, f *lab.Fabric, tr Tracer, src lab.Host, peers []netip.Addr, ports int, interval time.Duration) *labMapper {
	t.Helper()
	cfg := DefaultConfig()
	if lt, ok := tr.(*labTracer); ok {
		// Clear of the ports the probe engines hold.
		cfg.PingPort = lt.pingPort
		cfg.SrcPortStart = lt.pingPort + 1
	}
	cfg.LocalAddr = src.Addr
	cfg.SrcPortEnd = cfg.SrcPortStart + uint16(ports) - 1
	cfg.Interval = interval
	cfg.MaxTTL = 8
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	cfg.FIB = openFIB(t, f, src)
	lm := &labMapper{g: graph.New(graph.DefaultConfig()), reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	cfg.Registerer = lm.reg
	m, err := New(cfg, tr, lm.g)
	if err != nil {
		t.Fatalf("mapper.New: %v", err)
	}
	lm.m = m
	for _, p := range peers {
		m.AddPeer(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	lm.cancel = cancel
	go func() { lm.done <- m.Run(ctx) }()
	t.Cleanup(lm.stop)
	return lm
}

// openFIB opens the route table of h's namespace.
func openFIB(t *testing.T, f *lab.Fabric, h lab.Host) *loader.FIB {
	t.Helper()
	var tb *loader.FIB
	if err := f.Do(h.NS, func() (err error) { tb, err = loader.OpenFIB(); return err }); err != nil {
		t.Fatalf("fib in %s: %v", h.NS, err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

func (lm *labMapper) stop() {
	if lm.cancel == nil {
		return
	}
	lm.cancel()
	<-lm.done
	lm.cancel = nil
	lm.m.Close()
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// waitSweeps polls until the mapper has finished n more sweeps than now.
func waitSweeps(t *testing.T, m *Mapper, n int, timeout time.Duration) {
	t.Helper()
	m.mu.Lock()
	target := m.sweeps + n
	m.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for {
		m.mu.Lock()
		got := m.sweeps
		m.mu.Unlock()
		if got >= target {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mapper finished %d sweeps in %v, want %d", got, timeout, target)
		}
		time.Sleep(20 * time.Millisecond) // polling, not synchronisation
	}
}

// routesTo returns the distinct hop lists the route map holds for dst.
func routesTo(m *Mapper, dst netip.Addr) [][]string {
	seen := map[string]bool{}
	var out [][]string
	for _, e := range m.RouteMap() {
		if e.Dst != dst {
			continue
		}
		if k := strings.Join(e.Hops, " "); !seen[k] {
			seen[k] = true
			out = append(out, e.Hops)
		}
	}
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(strings.Join(a, " "), strings.Join(b, " ")) })
	return out
}

func sortedRoutes(rs [][]string) [][]string {
	out := slices.Clone(rs)
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(strings.Join(a, " "), strings.Join(b, " ")) })
	return out
}

func equalRoutes(a, b [][]string) bool {
	return slices.EqualFunc(sortedRoutes(a), sortedRoutes(b), slices.Equal[[]string])
}

func newLab(t *testing.T) *lab.Fabric {
	t.Helper()
	return lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 4, Leaves: 2, HostsPerLeaf: 1})
}

// Every ordered pair on different leaves: the default 11 ports find the 4
// paths of the ground truth, and a 2-port range is not confident. Traced
// with dnms's probe engine (dnms on every host) and, as an independent
// cross-check, with plain UDP probes and raw ICMP sockets (lab.ProbeHop).
func TestLabAllPaths(t *testing.T) {
	f := newLab(t)
	engines := startEngines(t, f, 11)
	for _, p := range labPairs(t, f) {
		tracers := map[string]Tracer{
			"engine":   engines[p.src.Name],
			"probehop": &labTracer{f: f, host: p.src.Name, pingPort: DefaultConfig().PingPort + 1000, timeout: 500 * time.Millisecond},
		}
		for name, tr := range tracers {
			t.Run(name+"/"+p.src.Name+"-"+p.dst.Name, func(t *testing.T) {
				lm := startLabMapper(t, f, tr, p.src, []netip.Addr{p.dst.Addr}, 11, time.Millisecond)
				waitSweeps(t, lm.m, 1, 60*time.Second)
				lm.stop()
				got := routesTo(lm.m, p.dst.Addr)
				if !equalRoutes(got, p.truth) {
					t.Errorf("routes found with 11 ports:\n%v\nground truth:\n%v", got, sortedRoutes(p.truth))
				}
				st := lm.m.Peers()[0]
				t.Logf("11 ports: %d routes, confident=%v, flows used %d, needed %d, miss probability %.3f",
					st.Routes, st.Confident, st.FlowsUsed, st.FlowsNeeded, st.MissProbability)
				snap := lm.g.Snapshot()
				if len(snap.Routes) != len(p.truth) {
					t.Errorf("graph holds %d routes, want %d", len(snap.Routes), len(p.truth))
				}
				if n := testutil.ToFloat64(lm.m.traces.WithLabelValues(p.dst.Addr.String(), ResultReached)); n < 11 {
					t.Errorf("dnms_traces_total{result=reached} = %v, want at least 11", n)
				}

				lm2 := startLabMapper(t, f, tr, p.src, []netip.Addr{p.dst.Addr}, 2, time.Millisecond)
				waitSweeps(t, lm2.m, 1, 30*time.Second)
				lm2.stop()
				st2 := lm2.m.Peers()[0]
				if st2.Confident || st2.FlowsUsed != 2 || st2.FlowsNeeded <= 2 {
					t.Errorf("2 ports: confident=%v used=%d needed=%d, want not confident", st2.Confident, st2.FlowsUsed, st2.FlowsNeeded)
				}
			})
		}
	}
}

// A spine link goes down: the ports hashed onto it move to other spines
// within two sweeps, and the graph emits path changes with both hop lists.
func TestLabLinkDownChangesPaths(t *testing.T) {
	f := newLab(t)
	p := labPairs(t, f)[0]
	engines := startEngines(t, f, 11)
	lm := startLabMapper(t, f, engines[p.src.Name], p.src, []netip.Addr{p.dst.Addr}, 11, 5*time.Millisecond)
	sub := lm.g.Subscribe(0, 4096)
	t.Cleanup(sub.Close)
	waitSweeps(t, lm.m, 1, 60*time.Second)

	// The spine with the most ports on it.
	bySpine := map[string][]uint16{}
	for _, e := range lm.m.RouteMap() {
		bySpine[e.Hops[2]] = append(bySpine[e.Hops[2]], e.SrcPort)
	}
	var spineAddr string
	for a, ports := range bySpine {
		if len(ports) > len(bySpine[spineAddr]) {
			spineAddr = a
		}
	}
	var spineName string
	for _, r := range f.Routers {
		if r.Loopback.String() == spineAddr {
			spineName = r.Name
		}
	}
	if spineName == "" {
		t.Fatalf("no router with loopback %s (route map %+v)", spineAddr, lm.m.RouteMap())
	}
	moved := bySpine[spineAddr]
	// The lab runs no routing protocol: with only the source leaf's link
	// down, the spine would keep black-holing what the far leaf still hashes
	// to it (replies included). Taking both of the spine's links down is what
	// a fabric with BGP converges to when the first one fails.
	t.Logf("setting %s's links down; ports %v used it", spineName, moved)
	for _, leaf := range []string{p.src.Leaf, p.dst.Leaf} {
		if err := f.SetDown(f.LinkBetween(leaf, spineName), true); err != nil {
			t.Fatalf("SetDown: %v", err)
		}
	}

	// Within two sweeps after the one in flight, no port uses that spine.
	waitSweeps(t, lm.m, 3, 120*time.Second)
	for _, e := range lm.m.RouteMap() {
		if e.Hops[2] == spineAddr {
			t.Errorf("port %d still routed via %s after two sweeps: %v", e.SrcPort, spineName, e.Hops)
		}
	}
	// Linux ECMP is hash-threshold, not resilient hashing: removing a next
	// hop rebalances the others, so ports that did not use the spine may move
	// too. Every port that used it must have moved.
	if got := testutil.ToFloat64(lm.m.changes.WithLabelValues(p.dst.Addr.String())); int(got) < len(moved) {
		t.Errorf("dnms_path_changes_total = %v, want at least %d (the ports that used %s)", got, len(moved), spineName)
	}
	// The graph's events carry old and new hops for each moved port.
	left := map[uint16]bool{}
	for _, port := range moved {
		left[port] = true
	}
	deadline := time.After(10 * time.Second)
	for len(left) > 0 {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				t.Fatal("subscription closed")
			}
			if ev.Type != graph.EventPathChange || ev.Change == nil {
				continue
			}
			c := ev.Change
			if len(c.OldHops) == 0 || len(c.NewHops) == 0 || c.OldRoute == c.NewRoute || c.HopDelta != len(c.NewHops)-len(c.OldHops) {
				t.Errorf("path change event without proper hops: %+v", c)
			}
			if slices.Contains(c.OldHops, spineAddr) && !slices.Contains(c.NewHops, spineAddr) {
				delete(left, c.Key.SrcPort)
			}
		case <-deadline:
			t.Fatalf("no path-change event moving ports %v off %s", left, spineName)
		}
	}
}
