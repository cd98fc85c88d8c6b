package aggregator

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/sseid"
)

// These tests run real internal/api servers over real agent graphs on
// loopback, and an aggregator streaming from them into its own graph.

type liveAgent struct {
	name string
	g    *graph.Graph
	api  *api.Server
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []http.Header // of event-stream requests
	mod  func(*api.Config)
}

func (l *liveAgent) requests() []http.Header {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

func startLiveAgent(t *testing.T, name string, mod func(*api.Config)) *liveAgent {
	t.Helper()
	return startLive(t, name, "127.0.0.1:0", mod, nil)
}

// startLiveAgentOn is startLiveAgent with the API listening on listen.
func startLiveAgentOn(t *testing.T, name, listen string, mod func(*api.Config)) *liveAgent {
	t.Helper()
	return startLive(t, name, listen, mod, nil)
}

// startLive is startLiveAgent listening on listen, serving https with tc
// when it is set.
func startLive(t *testing.T, name, listen string, mod func(*api.Config), tc *tls.Config) *liveAgent {
	t.Helper()
	l := &liveAgent{name: name, mod: mod}
	l.newInstance(t, nil)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	l.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		if r.URL.Path == EventsPath {
			l.reqs = append(l.reqs, r.Header.Clone())
		}
		h := l.api.Handler()
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	l.srv.Listener.Close()
	l.srv.Listener = ln
	startHTTPTest(l.srv, tc)
	t.Cleanup(func() {
		l.mu.Lock()
		s := l.api
		l.mu.Unlock()
		s.Close() // end SSE streams, then the server
		l.srv.Close()
	})
	return l
}

// newInstance gives the agent a new graph (filled by populate) and API
// server, as a restarted process would have, at the same URL.
func (l *liveAgent) newInstance(t *testing.T, populate func(*graph.Graph)) {
	t.Helper()
	gcfg := graph.DefaultConfig()
	gcfg.CoalesceInterval = 50 * time.Millisecond
	g := graph.New(gcfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go g.Run(ctx)
	if populate != nil {
		populate(g)
	}
	cfg := api.DefaultConfig()
	cfg.Token = "tok"
	cfg.Heartbeat = 200 * time.Millisecond
	cfg.Logger = testLogger()
	if l.mod != nil {
		l.mod(&cfg)
	}
	s, err := api.New(cfg, api.Deps{Graph: g})
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	l.mu.Lock()
	old := l.api
	l.g, l.api = g, s
	l.mu.Unlock()
	if old != nil {
		old.Close()
		l.srv.CloseClientConnections()
	}
}

// startHTTPTest starts srv, with TLS config tc when set.
func startHTTPTest(srv *httptest.Server, tc *tls.Config) {
	if tc == nil {
		srv.Start()
		return
	}
	srv.TLS = tc
	srv.StartTLS()
}

func hopsOf(as ...netip.Addr) []graph.Hop {
	out := make([]graph.Hop, len(as))
	for i, a := range as {
		out[i] = graph.Hop{Addr: a}
	}
	return out
}

// addSamples adds n samples to key, every lossEvery-th lost (0: none).
func addSamples(g *graph.Graph, key graph.RouteKey, from, n, lossEvery int) {
	t0 := time.Date(2026, 11, 23, 19, 0, 0, 0, time.UTC)
	for i := from; i < from+n; i++ {
		s := graph.Sample{Seq: uint64(i + 1), Sent: t0.Add(time.Duration(i) * 100 * time.Millisecond), Source: "user"}
		if lossEvery > 0 && i%lossEvery == 0 {
			s.Lost, s.Dir = true, graph.LossForward
		} else {
			s.RTT = 200*time.Microsecond + time.Duration(i%5)*10*time.Microsecond
		}
		g.AddSample(key, s)
	}
}

// routeView renders routes comparably: id, keys, samples, loss.
func routeView(rs []graph.Route, origin string) []string {
	var out []string
	for _, r := range rs {
		if r.Origin != origin {
			continue
		}
		var ks []string
		for _, k := range r.Keys {
			ks = append(ks, fmt.Sprintf("%s>%s:%d", k.Src, k.Dst, k.SrcPort))
		}
		slices.Sort(ks)
		out = append(out, fmt.Sprintf("%s %v n=%d loss=%.3f rtt=%.6f", r.ID, ks, r.Metrics.Samples, r.Metrics.Loss, r.Metrics.RTTAvg))
	}
	slices.Sort(out)
	return out
}

// waitMirrors waits until agg holds exactly the agent's routes under its name.
func waitMirrors(t *testing.T, agg *graph.Graph, l *liveAgent) {
	t.Helper()
	eventually(t, 20*time.Second, "aggregator mirrors "+l.name, func() (bool, string) {
		l.g.Flush()
		want := routeView(l.g.Snapshot().Routes, "")
		got := routeView(agg.Snapshot().Routes, l.name)
		return len(want) > 0 && slices.Equal(got, want), fmt.Sprintf("\ngot  %v\nwant %v", got, want)
	})
}

func TestLiveAgents(t *testing.T) {
	kA1 := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
	kA2 := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33437}
	kB1 := kA1.Reverse()
	kB2 := kA2.Reverse()

	a := startLiveAgent(t, "agentA", nil)
	a.g.SetRoute(kA1, hopsOf(hA, leaf1, sp1, leaf2, hB))
	a.g.SetRoute(kA2, hopsOf(hA, leaf1, sp2, leaf2, hB))
	addSamples(a.g, kA1, 0, 50, 0)
	addSamples(a.g, kA2, 0, 50, 0)
	b := startLiveAgent(t, "agentB", nil)
	b.g.SetRoute(kB1, hopsOf(hB, leaf2, sp1, leaf1, hA))
	b.g.SetRoute(kB2, hopsOf(hB, leaf2, sp2, leaf1, hA))
	addSamples(b.g, kB1, 0, 50, 0)
	addSamples(b.g, kB2, 0, 50, 0)

	h := startAggregator(t, func(c *Config) { c.Token = "tok" })
	h.a.AddMember(a.name, a.srv.URL)
	h.a.AddMember(b.name, b.srv.URL)
	waitMirrors(t, h.g, a)
	waitMirrors(t, h.g, b)
	if got := a.requests()[0].Get("Authorization"); got != "Bearer tok" {
		t.Fatalf("Authorization %q", got)
	}

	t.Run("update propagates with metrics", func(t *testing.T) {
		start := time.Now()
		addSamples(a.g, kA2, 50, 50, 5) // 20% loss on the sp2 route from now
		waitMirrors(t, h.g, a)
		t.Logf("metrics update reached the aggregator in %v (coalesce interval 50ms)", time.Since(start).Round(time.Millisecond))
		top := h.g.Health()[0]
		if !(top.Src == leaf1.String() && top.Dst == sp2.String()) && !(top.Src == sp2.String() && top.Dst == leaf2.String()) {
			t.Fatalf("top health row %s->%s (suspicion %.3f), want a link of the lossy A->B sp2 path", top.Src, top.Dst, top.Suspicion)
		}
	})

	t.Run("server drop resumes with Last-Event-ID", func(t *testing.T) {
		n := len(a.requests())
		seen := h.a.Status()[0].LastEventID
		a.srv.CloseClientConnections()
		// Changes made while the stream is down arrive after the resume.
		k3 := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33438}
		a.g.SetRoute(k3, hopsOf(hA, leaf1, sp1, leaf2, hB)) // joins the sp1 route
		addSamples(a.g, k3, 0, 10, 0)
		waitMirrors(t, h.g, a)
		eventually(t, 10*time.Second, "reconnect", func() (bool, string) { return len(a.requests()) > n, "" })
		got := a.requests()[n].Get("Last-Event-ID")
		if got == "" || got == "0" {
			t.Fatalf("reconnect sent Last-Event-ID %q, want the last id seen (>= %d)", got, seen)
		}
		if testutil.ToFloat64(h.a.met.resyncs.WithLabelValues(reasonGap))+testutil.ToFloat64(h.a.met.resyncs.WithLabelValues(reasonResync)) != 0 {
			t.Fatal("a resume needed a fresh snapshot")
		}
		// No duplicates: exactly the agent's routes, and we are at its last id.
		eventually(t, 10*time.Second, "at the agent's last event", func() (bool, string) {
			a.g.Flush()
			st := h.a.Status()[0]
			return st.LastEventID == a.g.LastEventID(), fmt.Sprintf("%d vs %d", st.LastEventID, a.g.LastEventID())
		})
	})

	t.Run("member removed", func(t *testing.T) {
		h.a.RemoveMember(b.name)
		if got := routeView(h.g.Snapshot().Routes, b.name); len(got) != 0 {
			t.Fatalf("B's routes remain: %v", got)
		}
		waitMirrors(t, h.g, a)
	})

	t.Run("aggregator restart rebuilds", func(t *testing.T) {
		h2 := startAggregator(t, func(c *Config) { c.Token = "tok" })
		h2.a.AddMember(a.name, a.srv.URL)
		h2.a.AddMember(b.name, b.srv.URL)
		waitMirrors(t, h2.g, a)
		waitMirrors(t, h2.g, b)
	})

	t.Run("wrong token", func(t *testing.T) {
		h3 := startAggregator(t, func(c *Config) { c.Token = "nope" })
		h3.a.AddMember(a.name, a.srv.URL)
		eventually(t, 10*time.Second, "a few rejected attempts", func() (bool, string) {
			return testutil.ToFloat64(h3.a.met.reconnects) >= 2, ""
		})
		if n := len(h3.g.Snapshot().Routes); n != 0 {
			t.Fatalf("%d routes with a wrong token", n)
		}
	})
}

// TestLiveResync makes the member's API tell the aggregator to resync: its
// per-stream buffer is 1 event and RemoveHost emits a burst of events in one
// call, so the subscription overflows. The aggregator must come back with a
// fresh snapshot and mirror the agent exactly.
func TestLiveResync(t *testing.T) {
	c := startLiveAgent(t, "agentC", func(c *api.Config) { c.StreamBuffer = 1 })
	var gone netip.Addr
	for i := range 40 {
		dst := netip.AddrFrom4([4]byte{198, 18, 3, byte(1 + i%8)})
		if i == 0 {
			gone = dst
		}
		k := graph.RouteKey{Src: hA, Dst: dst, SrcPort: uint16(33436 + i/8)}
		c.g.SetRoute(k, hopsOf(hA, leaf1, []netip.Addr{sp1, sp2}[i%2], leaf2, dst))
		addSamples(c.g, k, 0, 5, 0)
	}
	h := startAggregator(t, func(c *Config) { c.Token = "tok" })
	h.a.AddMember(c.name, c.srv.URL)
	waitMirrors(t, h.g, c)

	c.g.RemoveHost(gone) // 5 routes and their nodes/links in one burst
	for i := range 40 {  // and a stream of updates
		k := graph.RouteKey{Src: hA, Dst: netip.AddrFrom4([4]byte{198, 18, 3, byte(1 + i%8)}), SrcPort: uint16(33436 + i/8)}
		addSamples(c.g, k, 5, 5, 2)
	}
	waitMirrors(t, h.g, c)
	resyncs := testutil.ToFloat64(h.a.met.resyncs.WithLabelValues(reasonResync))
	if resyncs < 1 {
		t.Fatalf("no resync happened (resyncs=%v): the test did not exercise the path", resyncs)
	}
	var fresh int
	for _, r := range c.requests()[1:] {
		if r.Get("Last-Event-ID") == "" {
			fresh++
		}
	}
	if fresh < 1 {
		t.Fatalf("no reconnect without Last-Event-ID after resync: %v", c.requests())
	}
	t.Logf("resyncs: %v, fresh reconnects: %d", resyncs, fresh)
	if s := strings.Join(routeView(h.g.Snapshot().Routes, c.name), "\n"); strings.Contains(s, gone.String()+">") {
		t.Fatalf("routes to the removed host remain:\n%s", s)
	}
}

// TestLiveAgentRestart restarts a member between two connections so that
// the new process's event seqs overlap the one the aggregator resumes from.
// The resume point names the old process ("<instance>-<seq>"), so the new
// one answers with a snapshot and the two graphs are never mixed; the
// aggregator does no guessing of its own.
func TestLiveAgentRestart(t *testing.T) {
	a := startLiveAgent(t, "agentA", nil)
	k1 := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
	k2 := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33437}
	a.g.SetRoute(k1, hopsOf(hA, leaf1, sp1, leaf2, hB))
	a.g.SetRoute(k2, hopsOf(hA, leaf1, sp2, leaf2, hB))
	addSamples(a.g, k1, 0, 20, 0)
	addSamples(a.g, k2, 0, 20, 0)
	h := startAggregator(t, func(c *Config) { c.Token = "tok" })
	h.a.AddMember(a.name, a.srv.URL)
	waitMirrors(t, h.g, a)
	eventually(t, 10*time.Second, "at the agent's last event", func() (bool, string) {
		a.g.Flush()
		return h.a.Status()[0].LastEventID == a.g.LastEventID(), ""
	})
	resumeFrom := h.a.Status()[0].LastEventID

	// The restarted agent has k1 again, no k2, and routes to other hosts,
	// with more events than the aggregator saw from the first process.
	a.newInstance(t, func(g *graph.Graph) {
		g.SetRoute(k1, hopsOf(hA, leaf1, sp1, leaf2, hB))
		for i := range 10 {
			dst := netip.AddrFrom4([4]byte{198, 18, 4, byte(1 + i)})
			g.SetRoute(graph.RouteKey{Src: hA, Dst: dst, SrcPort: 33436}, hopsOf(hA, leaf1, sp2, leaf2, dst))
		}
		if g.LastEventID() <= resumeFrom {
			t.Fatalf("setup: new instance at event %d, need more than %d to overlap", g.LastEventID(), resumeFrom)
		}
	})
	for _, k := range a.g.RouteKeys() {
		addSamples(a.g, k, 0, 10, 0)
	}
	waitMirrors(t, h.g, a)
	reqs := a.requests()
	if len(reqs) < 2 {
		t.Fatalf("%d stream requests, want a reconnect", len(reqs))
	}
	inst, seq, ok := sseid.Parse(reqs[1].Get("Last-Event-ID"))
	if !ok || seq != resumeFrom || inst == "" {
		t.Fatalf("reconnect Last-Event-ID %q, want <old instance>-%d", reqs[1].Get("Last-Event-ID"), resumeFrom)
	}
}
