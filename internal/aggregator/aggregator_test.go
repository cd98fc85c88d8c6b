package aggregator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/sseid"
)

// Addresses from 198.18.0.0/15.
var (
	hA    = netip.MustParseAddr("198.18.1.1")
	hB    = netip.MustParseAddr("198.18.2.1")
	leaf1 = netip.MustParseAddr("198.18.0.11")
	leaf2 = netip.MustParseAddr("198.18.0.12")
	sp1   = netip.MustParseAddr("198.18.0.1")
	sp2   = netip.MustParseAddr("198.18.0.2")
)

func route(port uint16, loss float64, via ...netip.Addr) graph.Route {
	hops := []string{hA.String()}
	for _, v := range via {
		hops = append(hops, v.String())
	}
	hops = append(hops, hB.String())
	return graph.Route{
		ID:      graph.RouteID(hops),
		Src:     hA,
		Dst:     hB,
		Hops:    hops,
		Keys:    []graph.RouteKey{{Src: hA, Dst: hB, SrcPort: port}},
		Metrics: graph.Metrics{Samples: 100, Loss: loss, Lost: int(loss * 100), RTTAvg: 0.0001, Source: "user"},
	}
}

var (
	rSp1 = route(33436, 0, leaf1, sp1, leaf2)
	rSp2 = route(33437, 0.05, leaf1, sp2, leaf2)
)

// fakeInstance is the SSE instance of the scripted agents' ids.
const fakeInstance = "f"

// frame renders one SSE event as the api package does.
func frame(t *testing.T, name string, id uint64, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "event: %s\n", name)
	if id != 0 || name == "snapshot" {
		fmt.Fprintf(&sb, "id: %s\n", sseid.Format(fakeInstance, id))
	}
	fmt.Fprintf(&sb, "data: %s\n\n", b)
	return sb.String()
}

func snap(id uint64, rs ...graph.Route) graph.Snapshot {
	return graph.Snapshot{EventID: id, Routes: rs}
}

func ev(typ graph.EventType, r graph.Route) graph.Event {
	return graph.Event{Type: typ, Route: &r}
}

// fakeAgent serves a scripted SSE stream per connection: script[i] is what
// connection i gets; connections past the script get the last entry. The
// stream stays open after its script unless the entry ends with hangup.
type fakeAgent struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []http.Header
	script []string
	status int // non-zero: answer every request with this status
	open   int // connections currently streaming
}

const hangup = "\x00hangup"

func newFakeAgent(t *testing.T, script ...string) *fakeAgent {
	t.Helper()
	return newFakeAgentTLS(t, nil, script...)
}

// newFakeAgentTLS is newFakeAgent serving https with tc when it is set.
func newFakeAgentTLS(t *testing.T, tc *tls.Config, script ...string) *fakeAgent {
	t.Helper()
	f := &fakeAgent{t: t, script: script}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	startHTTPTest(f.srv, tc)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != EventsPath {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, r.Header.Clone())
	status := f.status
	var body string
	if len(f.script) > 0 {
		body = f.script[min(n, len(f.script)-1)]
	}
	f.open++
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.open--; f.mu.Unlock() }()
	if status != 0 {
		http.Error(w, "nope", status)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	hang := strings.HasSuffix(body, hangup)
	io.WriteString(w, strings.TrimSuffix(body, hangup))
	w.(http.Flusher).Flush()
	if hang {
		return
	}
	<-r.Context().Done()
}

func (f *fakeAgent) requests() []http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func (f *fakeAgent) openStreams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v; last seen: %s", what, timeout, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type harness struct {
	a   *Aggregator
	g   *graph.Graph
	reg *prometheus.Registry
}

func startAggregator(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BackoffMin = 20 * time.Millisecond
	cfg.BackoffMax = 200 * time.Millisecond
	cfg.Logger = testLogger()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	cfg.Trust = TrustGossipKey // the members here are taken to have proved membership
	for _, m := range mod {
		m(&cfg)
	}
	g := graph.New(graph.DefaultConfig())
	a, err := New(cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return &harness{a: a, g: g, reg: reg}
}

// routesOf returns origin's routes in g as "id loss" strings, sorted.
func routesOf(g *graph.Graph, origin string) []string {
	var out []string
	for _, r := range g.Snapshot().Routes {
		if r.Origin == origin {
			out = append(out, fmt.Sprintf("%s loss=%.2f keys=%d", r.ID, r.Metrics.Loss, len(r.Keys)))
		}
	}
	slices.Sort(out)
	return out
}

func want(rs ...graph.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s loss=%.2f keys=%d", r.ID, r.Metrics.Loss, len(r.Keys)))
	}
	slices.Sort(out)
	return out
}

func waitRoutes(t *testing.T, g *graph.Graph, origin string, rs ...graph.Route) {
	t.Helper()
	w := want(rs...)
	eventually(t, 10*time.Second, origin+"'s routes", func() (bool, string) {
		got := routesOf(g, origin)
		return slices.Equal(got, w), fmt.Sprintf("got %v want %v", got, w)
	})
}

func TestSnapshotAndEvents(t *testing.T) {
	upd := rSp2
	upd.Metrics.Loss = 0.2
	script := frame(t, "snapshot", 10, snap(10, rSp1)) +
		": hb\n\n" +
		"this line is garbage\n\x01\x02\xff\n\n" +
		frame(t, "node-add", 11, graph.Event{Type: graph.EventNodeAdd, Node: &graph.Node{ID: "x"}}) +
		frame(t, "route-add", 12, ev(graph.EventRouteAdd, rSp2)) +
		frame(t, "route-update", 13, ev(graph.EventRouteUpdate, upd)) +
		frame(t, "path-change", 14, graph.Event{Type: graph.EventPathChange}) +
		frame(t, "route-remove", 15, ev(graph.EventRouteRemove, rSp1)) +
		"event: future-thing\nid: f-16\ndata: whatever\n\n"
	f := newFakeAgent(t, script)
	h := startAggregator(t, func(c *Config) { c.Token = "s3cret" })
	h.a.AddMember("agentA", f.srv.URL+"/")

	waitRoutes(t, h.g, "agentA", upd)
	reqs := f.requests()
	if got := reqs[0].Get("Authorization"); got != "Bearer s3cret" {
		t.Fatalf("Authorization = %q", got)
	}
	if got := reqs[0].Get("Last-Event-ID"); got != "" {
		t.Fatalf("first connection sent Last-Event-ID %q", got)
	}
	eventually(t, 5*time.Second, "status", func() (bool, string) {
		st := h.a.Status()
		return len(st) == 1 && st[0].LastEventID == 16 && st[0].State == stateConnected && st[0].Routes == 1, fmt.Sprintf("%+v", st)
	})
	if n := testutil.ToFloat64(h.a.met.garbage); n < 2 {
		t.Fatalf("garbage lines counted %v, want >= 2", n)
	}
	if n := testutil.ToFloat64(h.a.met.streams.WithLabelValues(stateConnected)); n != 1 {
		t.Fatalf("streams{connected} = %v", n)
	}
	if name := h.a.Status()[0].Name; !h.a.Connected(name) || h.a.Connected(name+"-unknown") {
		t.Fatalf("Connected(%q) = %v, Connected of an unknown member = %v", name, h.a.Connected(name), h.a.Connected(name+"-unknown"))
	}
	if n := testutil.ToFloat64(h.a.met.events.WithLabelValues("route-update")); n != 1 {
		t.Fatalf("events{route-update} = %v", n)
	}
	if len(f.requests()) != 1 {
		t.Fatalf("reconnected %d times on a healthy stream", len(f.requests())-1)
	}
	// The aggregator's graph derives nodes and links from the routes.
	s := h.g.Snapshot()
	if len(s.Links) != 4 {
		t.Fatalf("links %v, want the 4 of the sp2 route", s.Links)
	}
}

func TestResumeWithLastEventID(t *testing.T) {
	f := newFakeAgent(t,
		frame(t, "snapshot", 5, snap(5, rSp1))+frame(t, "route-add", 6, ev(graph.EventRouteAdd, rSp2))+hangup,
		// The member replays 6 (a duplicate for us), then 7.
		frame(t, "route-add", 6, ev(graph.EventRouteAdd, rSp2))+frame(t, "route-remove", 7, ev(graph.EventRouteRemove, rSp1)),
	)
	h := startAggregator(t)
	h.a.AddMember("agentA", f.srv.URL)
	waitRoutes(t, h.g, "agentA", rSp2)
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d connections, want 2", len(reqs))
	}
	if got := reqs[1].Get("Last-Event-ID"); got != "f-6" {
		t.Fatalf("reconnect Last-Event-ID = %q, want f-6", got)
	}
	if n := testutil.ToFloat64(h.a.met.reconnects); n != 1 {
		t.Fatalf("reconnects = %v", n)
	}
	// The duplicate route-add did not add a second copy.
	if n := len(h.g.Snapshot().Routes); n != 1 {
		t.Fatalf("%d routes after duplicate", n)
	}
}

func TestFreshSnapshotWhenUnsure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		first  string
		reason string
	}{
		{"resync event", frame(t, "snapshot", 5, snap(5, rSp1, rSp2)) + frame(t, "resync", 0, map[string]any{"reason": "client fell behind"}), reasonResync},
		{"id gap", frame(t, "snapshot", 5, snap(5, rSp1, rSp2)) + frame(t, "route-update", 7, ev(graph.EventRouteUpdate, rSp1)), reasonGap},
		{"undecodable route event", frame(t, "snapshot", 5, snap(5, rSp1, rSp2)) + "event: route-add\nid: 6\ndata: {\"route\": [garbage\n\n", reasonBadEvent},
		{"route-add for a route we have", frame(t, "snapshot", 5, snap(5, rSp1, rSp2)) + frame(t, "route-add", 6, ev(graph.EventRouteAdd, rSp1)), reasonInconsistent},
		{"route-update for a route we lack", frame(t, "snapshot", 5, snap(5, rSp1)) + frame(t, "route-update", 6, ev(graph.EventRouteUpdate, rSp2)), reasonInconsistent},
		{"route-remove for a route we lack", frame(t, "snapshot", 5, snap(5, rSp1)) + frame(t, "route-remove", 6, ev(graph.EventRouteRemove, rSp2)), reasonInconsistent},
		{"route event without route", frame(t, "snapshot", 5, snap(5, rSp1, rSp2)) + frame(t, "route-add", 6, graph.Event{}), reasonBadEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The fresh snapshot no longer has rSp1: it must go.
			f := newFakeAgent(t, tc.first, frame(t, "snapshot", 40, snap(40, rSp2)))
			h := startAggregator(t)
			h.a.AddMember("agentA", f.srv.URL)
			eventually(t, 10*time.Second, "second connection", func() (bool, string) {
				return len(f.requests()) >= 2, fmt.Sprint(len(f.requests()))
			})
			if got := f.requests()[1].Get("Last-Event-ID"); got != "" {
				t.Fatalf("reconnect after %s sent Last-Event-ID %q", tc.name, got)
			}
			waitRoutes(t, h.g, "agentA", rSp2)
			if n := testutil.ToFloat64(h.a.met.resyncs.WithLabelValues(tc.reason)); n != 1 {
				t.Fatalf("resyncs{%s} = %v", tc.reason, n)
			}
		})
	}
}

func TestSnapshotReplacesContribution(t *testing.T) {
	// A path change: the key of rSp1 moves to a route through sp2.
	moved := route(33436, 0.01, leaf1, sp2, leaf2)
	f := newFakeAgent(t,
		frame(t, "snapshot", 5, snap(5, rSp1, rSp2))+frame(t, "resync", 0, nil),
		frame(t, "snapshot", 9, snap(9, moved)),
	)
	h := startAggregator(t)
	h.a.AddMember("agentA", f.srv.URL)
	// rSp2's key 33437 is gone, 33436 now maps to moved (same hops as rSp2,
	// so the same route id, with only key 33436).
	waitRoutes(t, h.g, "agentA", moved)
}

func TestMembersAreSeparateOrigins(t *testing.T) {
	fa := newFakeAgent(t, frame(t, "snapshot", 3, snap(3, rSp1)))
	fb := newFakeAgent(t, frame(t, "snapshot", 8, snap(8, rSp1, rSp2)))
	h := startAggregator(t)
	h.a.AddMember("a", fa.srv.URL)
	h.a.AddMember("b", fb.srv.URL)
	waitRoutes(t, h.g, "a", rSp1)
	waitRoutes(t, h.g, "b", rSp1, rSp2)

	h.a.RemoveMember("a")
	if got := routesOf(h.g, "a"); len(got) != 0 {
		t.Fatalf("a's routes after removal: %v", got)
	}
	waitRoutes(t, h.g, "b", rSp1, rSp2)
	eventually(t, 5*time.Second, "a's stream closed", func() (bool, string) {
		return fa.openStreams() == 0, fmt.Sprint(fa.openStreams())
	})
	if st := h.a.Status(); len(st) != 1 || st[0].Name != "b" {
		t.Fatalf("status %+v", st)
	}
	// Removing an unknown member is harmless.
	h.a.RemoveMember("nobody")
	h.a.RemoveMember("b")
	for _, st := range []string{stateConnecting, stateConnected, stateBackoff} {
		if n := testutil.ToFloat64(h.a.met.streams.WithLabelValues(st)); n != 0 {
			t.Errorf("streams{%s} = %v after every member left", st, n)
		}
	}
	if n := len(h.g.Snapshot().Routes); n != 0 {
		t.Errorf("%d routes after every member left", n)
	}
}

func TestMemberMoves(t *testing.T) {
	f1 := newFakeAgent(t, frame(t, "snapshot", 3, snap(3, rSp1, rSp2)))
	f2 := newFakeAgent(t, frame(t, "snapshot", 1, snap(1, rSp2)))
	h := startAggregator(t)
	h.a.AddMember("a", f1.srv.URL)
	waitRoutes(t, h.g, "a", rSp1, rSp2)
	h.a.AddMember("a", f1.srv.URL) // same URL: nothing happens
	h.a.AddMember("a", f2.srv.URL)
	waitRoutes(t, h.g, "a", rSp2)
	if n := len(f1.requests()); n != 1 {
		t.Fatalf("f1 got %d connections", n)
	}
}

func TestUnauthorizedAndUnreachableBackOff(t *testing.T) {
	f := newFakeAgent(t)
	f.status = http.StatusUnauthorized
	h := startAggregator(t, func(c *Config) { c.Token = "wrong" })
	h.a.AddMember("a", f.srv.URL)
	// A port nothing listens on (the closed server's).
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	h.a.AddMember("dead", deadURL)

	eventually(t, 10*time.Second, "retries with backoff", func() (bool, string) {
		n := len(f.requests())
		return n >= 3 && testutil.ToFloat64(h.a.met.reconnects) >= 4, fmt.Sprintf("%d requests, %v reconnects", n, testutil.ToFloat64(h.a.met.reconnects))
	})
	// Backoff grows: 3 attempts within min+2min+4min jittered, not hundreds.
	if n := len(f.requests()); n > 50 {
		t.Fatalf("%d requests: no backoff", n)
	}
	if len(h.g.Snapshot().Routes) != 0 {
		t.Fatal("routes from an unauthorized stream")
	}
}

func TestIdleStreamIsDropped(t *testing.T) {
	f := newFakeAgent(t, frame(t, "snapshot", 2, snap(2, rSp1))) // then silence
	h := startAggregator(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	h.a.AddMember("a", f.srv.URL)
	eventually(t, 10*time.Second, "reconnect after idle", func() (bool, string) {
		r := f.requests()
		return len(r) >= 2 && r[1].Get("Last-Event-ID") == "f-2", fmt.Sprint(len(r))
	})
	waitRoutes(t, h.g, "a", rSp1)
}

func TestAddBeforeRunAndStop(t *testing.T) {
	f := newFakeAgent(t, frame(t, "snapshot", 2, snap(2, rSp1)))
	g := graph.New(graph.DefaultConfig())
	cfg := DefaultConfig()
	cfg.Logger = testLogger()
	a, err := New(cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	a.AddMember("a", f.srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitRoutes(t, g, "a", rSp1)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	eventually(t, 5*time.Second, "stream closed on stop", func() (bool, string) {
		return f.openStreams() == 0, fmt.Sprint(f.openStreams())
	})
	a.AddMember("b", f.srv.URL) // after stop: ignored, no goroutine
	if err := a.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestConfigRejects(t *testing.T) {
	g := graph.New(graph.DefaultConfig())
	for _, mod := range []func(*Config){
		func(c *Config) { c.BackoffMin = 0 },
		func(c *Config) { c.BackoffMax = c.BackoffMin / 2 },
		func(c *Config) { c.MaxLineBytes = 10 },
		func(c *Config) { c.IdleTimeout = 0 },
	} {
		c := DefaultConfig()
		mod(&c)
		if _, err := New(c, g); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	if _, err := New(DefaultConfig(), nil); err == nil {
		t.Error("nil graph accepted")
	}
}

func TestBaseURL(t *testing.T) {
	for _, tc := range []struct {
		a    string
		port uint16
		want string
	}{
		{"198.18.1.1", 12345, "http://198.18.1.1:12345"},
		{"fd00::1", 80, "http://[fd00::1]:80"},
		{"::ffff:198.18.1.1", 1, "http://198.18.1.1:1"},
	} {
		if got := BaseURL(netip.MustParseAddr(tc.a), tc.port); got != tc.want {
			t.Errorf("BaseURL(%s, %d) = %s, want %s", tc.a, tc.port, got, tc.want)
		}
	}
}

// TestSilentMemberIsStale: a member whose stream goes silent (a dead link
// black-holes it without an error) is marked stale in the graph once
// StaleAfter passes, before the idle timeout gives the stream up; its
// routes stay, and the status and the stale-routes gauge say so.
func TestSilentMemberIsStale(t *testing.T) {
	f := newFakeAgent(t, frame(t, "snapshot", 2, snap(2, rSp1))) // then silence
	h := startAggregator(t, func(c *Config) {
		c.StaleAfter = 200 * time.Millisecond
		c.IdleTimeout = time.Minute
	})
	h.a.AddMember("a", f.srv.URL)
	waitRoutes(t, h.g, "a", rSp1)
	eventually(t, 10*time.Second, "member a marked stale", func() (bool, string) {
		return h.g.OriginStale("a"), "not stale"
	})
	if len(f.requests()) != 1 {
		t.Errorf("%d connections: the stream was given up, want it kept until the idle timeout", len(f.requests()))
	}
	waitRoutes(t, h.g, "a", rSp1) // still there
	st := h.a.Status()
	if len(st) != 1 || !st[0].Stale || st[0].State != stateConnected {
		t.Errorf("status %+v, want one connected member marked stale", st)
	}
	if v := h.a.staleRoutes(); v != 1 {
		t.Errorf("dnms_aggregator_stale_routes %v, want 1", v)
	}
}
