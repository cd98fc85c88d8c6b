package api

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func newHandler(t *testing.T, cfg Config, deps Deps) http.Handler {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer, cfg.Gatherer = reg, reg
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s.Handler()
}

func TestEndpoints(t *testing.T) {
	g := fixtureGraph(t)
	agg := fixtureGraph(t)
	cfg := DefaultConfig()
	cfg.RouteMetrics = true
	h := newHandler(t, cfg, Deps{
		Graph:          g,
		Aggregator:     agg,
		MapperPeers:    func() any { return []string{h2.String(), h3.String()} },
		MapperRouteMap: func() any { return map[string]string{"x": "y"} },
		Meta:           func() any { return map[string]any{"version": "test", "timeSource": "ebpf", "status": "overridden?"} },
	})
	snap := g.Snapshot()

	tests := []struct {
		path  string
		check func(t *testing.T, body []byte)
	}{
		{"/v1/graph", func(t *testing.T, b []byte) {
			var got graph.Snapshot
			mustUnmarshal(t, b, &got)
			if len(got.Routes) != len(snap.Routes) || len(got.Nodes) != len(snap.Nodes) || len(got.Links) != len(snap.Links) {
				t.Errorf("graph: %d nodes %d links %d routes, want %d %d %d",
					len(got.Nodes), len(got.Links), len(got.Routes), len(snap.Nodes), len(snap.Links), len(snap.Routes))
			}
		}},
		{"/v1/graph/nodes", lenCheck[graph.Node](len(snap.Nodes))},
		{"/v1/graph/edges", lenCheck[graph.Link](len(snap.Links))},
		{"/v1/graph/routes", func(t *testing.T, b []byte) {
			var got []graph.Route
			mustUnmarshal(t, b, &got)
			if len(got) != len(snap.Routes) {
				t.Fatalf("%d routes, want %d", len(got), len(snap.Routes))
			}
			for _, r := range got {
				if r.Metrics.Samples == 0 {
					t.Errorf("route %s has no metrics", r.ID)
				}
			}
		}},
		{"/v1/graph/edges/health", func(t *testing.T, b []byte) {
			var got []graph.LinkHealth
			mustUnmarshal(t, b, &got)
			if len(got) == 0 {
				t.Fatal("no health rows")
			}
			top := got[0]
			if top.Suspicion <= 0 || top.Src != spine1.String() || top.Dst != leaf2.String() || top.Verdict != graph.VerdictFaulty {
				t.Errorf("top row %+v, want spine1→leaf2 faulty with positive suspicion", top)
			}
		}},
		{"/v1/aggregator/graph", func(t *testing.T, b []byte) {
			var got graph.Snapshot
			mustUnmarshal(t, b, &got)
			if len(got.Routes) != len(snap.Routes) {
				t.Errorf("%d routes, want %d", len(got.Routes), len(snap.Routes))
			}
		}},
		{"/v1/aggregator/graph/nodes", lenCheck[graph.Node](len(snap.Nodes))},
		{"/v1/aggregator/graph/edges", lenCheck[graph.Link](len(snap.Links))},
		{"/v1/aggregator/graph/routes", lenCheck[graph.Route](len(snap.Routes))},
		{"/v1/aggregator/graph/edges/health", lenCheck[graph.LinkHealth](len(snap.Links))},
		{"/v1/mapper/peers", func(t *testing.T, b []byte) {
			var got []string
			mustUnmarshal(t, b, &got)
			if len(got) != 2 {
				t.Errorf("peers %v", got)
			}
		}},
		{"/v1/mapper/routemap", func(t *testing.T, b []byte) {
			var got map[string]string
			mustUnmarshal(t, b, &got)
			if got["x"] != "y" {
				t.Errorf("routemap %v", got)
			}
		}},
		{"/healthz", func(t *testing.T, b []byte) {
			var got map[string]any
			mustUnmarshal(t, b, &got)
			if got["status"] != "ok" || got["version"] != "test" || got["timeSource"] != "ebpf" || got["aggregator"] != true {
				t.Errorf("healthz %v", got)
			}
		}},
		{"/metrics", func(t *testing.T, b []byte) {
			if !bytes.Contains(b, []byte("dnms_route_loss_ratio{")) || !bytes.Contains(b, []byte(`view="aggregator"`)) {
				t.Errorf("metrics lack route loss or aggregator links:\n%s", b)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			rec := do(t, h, http.MethodGet, tc.path, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", tc.path, rec.Code, rec.Body)
			}
			if tc.path != "/metrics" {
				if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q", ct)
				}
			}
			tc.check(t, rec.Body.Bytes())
			head := do(t, h, http.MethodHead, tc.path, nil)
			// (promhttp writes a body on HEAD; net/http drops it on the wire.)
			if head.Code != http.StatusOK || (head.Body.Len() != 0 && tc.path != "/metrics") {
				t.Errorf("HEAD %s: %d with %d body bytes", tc.path, head.Code, head.Body.Len())
			}
		})
	}
}

func lenCheck[T any](want int) func(t *testing.T, b []byte) {
	return func(t *testing.T, b []byte) {
		t.Helper()
		var got []T
		mustUnmarshal(t, b, &got)
		if len(got) != want {
			t.Errorf("%d items, want %d", len(got), want)
		}
	}
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, b)
	}
}

func TestQueryFilters(t *testing.T) {
	h := newHandler(t, DefaultConfig(), Deps{Graph: fixtureGraph(t)})
	cases := []struct {
		path string
		code int
		n    int
	}{
		{"/v1/graph/routes?dst=198.18.2.1", 200, 2},
		{"/v1/graph/routes?src=198.18.1.1&dst=198.18.3.1", 200, 1},
		{"/v1/graph/routes?src=198.18.9.9", 200, 0},
		{"/v1/graph/routes?dst=nope", 400, -1},
		{"/v1/graph/edges/health?top=3", 200, 3},
		{"/v1/graph/edges/health?top=0", 200, 12},
		{"/v1/graph/edges/health?top=-1", 400, -1},
	}
	for _, c := range cases {
		rec := do(t, h, http.MethodGet, c.path, nil)
		if rec.Code != c.code {
			t.Errorf("GET %s: %d, want %d", c.path, rec.Code, c.code)
			continue
		}
		if c.n < 0 {
			assertJSONError(t, rec.Body.Bytes())
			continue
		}
		var got []json.RawMessage
		mustUnmarshal(t, rec.Body.Bytes(), &got)
		if len(got) != c.n {
			t.Errorf("GET %s: %d items, want %d", c.path, len(got), c.n)
		}
	}
}

func TestOptionalDeps(t *testing.T) {
	var nilGraph *graph.Graph // a typed nil means "no aggregator"
	h := newHandler(t, DefaultConfig(), Deps{Graph: graph.New(graph.DefaultConfig()), Aggregator: nilGraph})
	for _, path := range []string{"/v1/mapper/peers", "/v1/mapper/routemap", "/v1/aggregator/graph", "/v1/aggregator/events/graph", "/nope"} {
		rec := do(t, h, http.MethodGet, path, nil)
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, rec.Code)
		}
		assertJSONError(t, rec.Body.Bytes())
	}
	// An empty graph serves [] rather than null.
	for _, path := range []string{"/v1/graph/nodes", "/v1/graph/edges", "/v1/graph/routes", "/v1/graph/edges/health"} {
		rec := do(t, h, http.MethodGet, path, nil)
		if got := strings.TrimSpace(rec.Body.String()); got != "[]" {
			t.Errorf("GET %s on an empty graph: %q, want []", path, got)
		}
	}
	rec := do(t, h, http.MethodGet, "/v1/graph", nil)
	if !strings.Contains(rec.Body.String(), `"routes":[]`) {
		t.Errorf("empty /v1/graph: %s", rec.Body)
	}
	if _, err := New(DefaultConfig(), Deps{}); err == nil {
		t.Error("New without a graph succeeded")
	}
}

func assertJSONError(t *testing.T, b []byte) {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
		t.Errorf("not a JSON error body: %q", b)
	}
}

func TestErrors(t *testing.T) {
	h := newHandler(t, DefaultConfig(), Deps{Graph: panicGraph{}})
	rec := do(t, h, http.MethodPost, "/v1/graph", nil)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/graph: %d, want 405", rec.Code)
	}
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("405 Allow %q", allow)
	}
	assertJSONError(t, rec.Body.Bytes())

	rec = do(t, h, http.MethodGet, "/v1/graph", nil)
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("panicking graph: %d, want 500", rec.Code)
	}
	assertJSONError(t, rec.Body.Bytes())
}

// panicGraph panics on every read: the server must answer 500, not die.
type panicGraph struct{}

func (panicGraph) Snapshot() graph.Snapshot                  { panic("boom") }
func (panicGraph) Health() []graph.LinkHealth                { panic("boom") }
func (panicGraph) Subscribe(uint64, int) *graph.Subscription { panic("boom") }

func TestAuth(t *testing.T) {
	g := fixtureGraph(t)
	paths := []string{
		"/v1/graph", "/v1/graph/nodes", "/v1/graph/edges", "/v1/graph/edges/health", "/v1/graph/routes",
		"/v1/aggregator/graph", "/v1/aggregator/graph/edges/health",
		"/v1/graph/layout", "/v1/aggregator/graph/layout",
		"/v1/mapper/peers", "/v1/mapper/routemap", "/metrics",
	}
	deps := Deps{Graph: g, Aggregator: g, MapperPeers: func() any { return []string{} }, MapperRouteMap: func() any { return []string{} }}

	t.Run("off", func(t *testing.T) {
		h := newHandler(t, DefaultConfig(), deps)
		for _, p := range append(paths, "/healthz") {
			if rec := do(t, h, http.MethodGet, p, nil); rec.Code != http.StatusOK {
				t.Errorf("GET %s without token config: %d", p, rec.Code)
			}
		}
	})
	t.Run("on", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Token = "s3cret-token"
		h := newHandler(t, cfg, deps)
		cases := []struct {
			name string
			auth string
			want int
		}{
			{"none", "", http.StatusUnauthorized},
			{"wrong", "Bearer nope", http.StatusUnauthorized},
			{"prefix", "Bearer s3cret", http.StatusUnauthorized},
			{"basic", "Basic czNjcmV0LXRva2Vu", http.StatusUnauthorized},
			{"right", "Bearer s3cret-token", http.StatusOK},
			{"lowercase scheme", "bearer s3cret-token", http.StatusOK},
		}
		for _, c := range cases {
			for _, p := range paths {
				hdr := map[string]string{}
				if c.auth != "" {
					hdr["Authorization"] = c.auth
				}
				rec := do(t, h, http.MethodGet, p, hdr)
				if rec.Code != c.want {
					t.Errorf("%s: GET %s: %d, want %d", c.name, p, rec.Code, c.want)
				}
				if c.want == http.StatusUnauthorized {
					if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("%s: GET %s: WWW-Authenticate %q", c.name, p, rec.Header().Get("WWW-Authenticate"))
					}
					assertJSONError(t, rec.Body.Bytes())
				}
			}
		}
		if rec := do(t, h, http.MethodGet, "/healthz", nil); rec.Code != http.StatusOK {
			t.Errorf("/healthz with token set and none sent: %d, want 200", rec.Code)
		}
		if rec := do(t, h, http.MethodOptions, "/v1/graph", nil); rec.Code != http.StatusNoContent {
			t.Errorf("preflight with token set: %d, want 204", rec.Code)
		}
	})
}

func TestCORS(t *testing.T) {
	g := fixtureGraph(t)
	for _, origin := range []string{"*", "https://ops.example"} {
		cfg := DefaultConfig()
		cfg.AllowOrigin = origin
		cfg.Token = "tok"
		h := newHandler(t, cfg, Deps{Graph: g})
		cases := []struct {
			method, path string
			hdr          map[string]string
			want         int
		}{
			{http.MethodGet, "/v1/graph", map[string]string{"Authorization": "Bearer tok"}, http.StatusOK},
			{http.MethodGet, "/v1/graph", nil, http.StatusUnauthorized},
			{http.MethodGet, "/healthz", nil, http.StatusOK},
			{http.MethodGet, "/nope", map[string]string{"Authorization": "Bearer tok"}, http.StatusNotFound},
			{http.MethodOptions, "/v1/graph/edges/health", map[string]string{
				"Origin":                         "https://ops.example",
				"Access-Control-Request-Method":  "GET",
				"Access-Control-Request-Headers": "authorization,last-event-id",
			}, http.StatusNoContent},
			{http.MethodOptions, "/v1/events/graph", nil, http.StatusNoContent},
		}
		for _, c := range cases {
			rec := do(t, h, c.method, c.path, c.hdr)
			if rec.Code != c.want {
				t.Errorf("origin %s: %s %s: %d, want %d", origin, c.method, c.path, rec.Code, c.want)
			}
			hd := rec.Header()
			if got := hd.Get("Access-Control-Allow-Origin"); got != origin {
				t.Errorf("origin %s: %s %s: Allow-Origin %q", origin, c.method, c.path, got)
			}
			if c.method == http.MethodOptions {
				ah := strings.ToLower(hd.Get("Access-Control-Allow-Headers"))
				if !strings.Contains(ah, "authorization") || !strings.Contains(ah, "last-event-id") {
					t.Errorf("preflight Allow-Headers %q", ah)
				}
				if !strings.Contains(hd.Get("Access-Control-Allow-Methods"), "GET") {
					t.Errorf("preflight Allow-Methods %q", hd.Get("Access-Control-Allow-Methods"))
				}
			}
		}
	}
	cfg := DefaultConfig()
	cfg.AllowOrigin = ""
	h := newHandler(t, cfg, Deps{Graph: g})
	if got := do(t, h, http.MethodGet, "/v1/graph", nil).Header().Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("empty AllowOrigin still sent %q", got)
	}
}

// TestGoldenGraph pins the /v1/graph and /v1/graph/edges/health JSON shapes.
// Run with -update to rewrite them after an intended change.
func TestGoldenGraph(t *testing.T) {
	h := newHandler(t, DefaultConfig(), Deps{Graph: fixtureGraph(t)})
	for _, c := range []struct{ path, file string }{
		{"/v1/graph?pretty", "graph.golden.json"},
		{"/v1/graph/edges/health?pretty", "health.golden.json"},
	} {
		rec := do(t, h, http.MethodGet, c.path, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", c.path, rec.Code)
		}
		golden(t, c.file, rec.Body.Bytes())
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test ./internal/api -run Golden -update to accept):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestRunShutdown(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	s, err := New(cfg, Deps{Graph: fixtureGraph(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := openSSE(t, "http://"+ln.Addr().String()+"/v1/events/graph", nil)
	if ev := c.next(t, 10*time.Second); ev.Event != sseSnapshot {
		t.Fatalf("first event %q", ev.Event)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel with an open stream")
	}
	c.ended(t, 10*time.Second)
	t.Logf("shutdown with an open stream took %v", time.Since(start))

	// Run reports a listen error with the address.
	cfg.Addr = ln.Addr().String() + "0000"
	s2, err := New(cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a bad address: %v", err)
	}
}

func TestRequestLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxHeaderBytes = 1 << 10
	ts := newTestServer(t, cfg, Deps{Graph: fixtureGraph(t)})
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/graph", nil)
	req.Header.Set("X-Padding", strings.Repeat("x", 8<<10)) // > 1 KiB + net/http's 4 KiB slack
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("oversized header: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: %d, want 431", resp.StatusCode)
	}

	// A client that never finishes its headers is cut after ReadHeaderTimeout.
	cfg = DefaultConfig()
	cfg.ReadHeaderTimeout = 200 * time.Millisecond
	ts = newTestServer(t, cfg, Deps{Graph: fixtureGraph(t)})
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /v1/graph HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	start := time.Now()
	for {
		if _, err := conn.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("slow-header connection still open after 10s")
			}
			break // closed by the server
		}
	}
	t.Logf("slow-header connection closed after %v", time.Since(start))
}

// The handlers read the graph's shared snapshot: a filtered request must
// not change what the next requests see.
func TestFiltersLeaveSharedSnapshot(t *testing.T) {
	g := fixtureGraph(t)
	h := newHandler(t, DefaultConfig(), Deps{Graph: g})
	want, err := json.Marshal(g.Snapshot().Routes)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/graph/routes?dst=198.18.3.1", "/v1/graph/routes?src=198.18.9.9", "/v1/graph/routes"} {
		if rec := do(t, h, http.MethodGet, path, nil); rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, rec.Code)
		}
		rec := do(t, h, http.MethodGet, "/v1/graph/routes", nil)
		if got := bytes.TrimSpace(rec.Body.Bytes()); !bytes.Equal(got, want) {
			t.Fatalf("after GET %s, /v1/graph/routes:\n%s\nwant\n%s", path, got, want)
		}
		var doc graph.Snapshot
		mustUnmarshal(t, do(t, h, http.MethodGet, "/v1/graph", nil).Body.Bytes(), &doc)
		if got, _ := json.Marshal(doc.Routes); !bytes.Equal(got, want) {
			t.Fatalf("after GET %s, /v1/graph routes differ", path)
		}
	}
}
