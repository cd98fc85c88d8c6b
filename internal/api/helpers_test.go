package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/sseid"
)

// Fixture fabric (addresses from 198.18.0.0/15): hosts h1,h2 under leaf1,
// h3,h4 under leaf2, h5 under leaf3, two spines. The agent on h1 has routes
// to h2..h5 on four source ports; ports 33436 and 33438 cross spine1,
// 33437 crosses spine2, and 33439 crosses a silent hop where spine2 would
// be. The faulty link is spine1->leaf2; the loss-free route to h5 through
// spine1 clears leaf1->spine1, so the fault is identifiable.
var (
	h1     = netip.MustParseAddr("198.18.1.1")
	h2     = netip.MustParseAddr("198.18.1.2")
	h3     = netip.MustParseAddr("198.18.2.1")
	h4     = netip.MustParseAddr("198.18.2.2")
	h5     = netip.MustParseAddr("198.18.3.1")
	leaf1  = netip.MustParseAddr("198.18.0.11")
	leaf2  = netip.MustParseAddr("198.18.0.12")
	leaf3  = netip.MustParseAddr("198.18.0.13")
	spine1 = netip.MustParseAddr("198.18.0.1")
	spine2 = netip.MustParseAddr("198.18.0.2")
)

var fixedNow = time.Date(2026, 11, 23, 19, 0, 0, 0, time.UTC)

func hops(as ...netip.Addr) []graph.Hop {
	out := make([]graph.Hop, len(as))
	for i, a := range as {
		out[i] = graph.Hop{Addr: a}
	}
	return out
}

// fixtureGraph builds the agent graph of h1 with 100 samples per key; every
// tenth probe through spine1->leaf2 is lost on the forward path.
func fixtureGraph(t testing.TB) *graph.Graph {
	t.Helper()
	cfg := graph.DefaultConfig()
	cfg.Now = func() time.Time { return fixedNow }
	g := graph.New(cfg)
	var none netip.Addr // silent hop
	routes := []struct {
		key  graph.RouteKey
		path []graph.Hop
	}{
		{graph.RouteKey{Src: h1, Dst: h2, SrcPort: 33436}, hops(h1, leaf1, h2)},
		{graph.RouteKey{Src: h1, Dst: h3, SrcPort: 33436}, hops(h1, leaf1, spine1, leaf2, h3)},
		{graph.RouteKey{Src: h1, Dst: h3, SrcPort: 33437}, hops(h1, leaf1, spine2, leaf2, h3)},
		{graph.RouteKey{Src: h1, Dst: h4, SrcPort: 33438}, hops(h1, leaf1, spine1, leaf2, h4)},
		{graph.RouteKey{Src: h1, Dst: h4, SrcPort: 33439}, hops(h1, leaf1, none, leaf2, h4)},
		{graph.RouteKey{Src: h1, Dst: h5, SrcPort: 33436}, hops(h1, leaf1, spine1, leaf3, h5)},
	}
	for _, r := range routes {
		g.SetRoute(r.key, r.path)
		lossy := len(r.path) > 3 && r.path[2].Addr == spine1 && r.path[3].Addr == leaf2
		for j := range 100 {
			s := graph.Sample{
				Seq:    uint64(j + 1),
				Sent:   fixedNow.Add(time.Duration(j) * 100 * time.Millisecond),
				Source: "ebpf",
			}
			if lossy && j%10 == 0 {
				s.Lost, s.Dir = true, graph.LossForward
			} else {
				s.RTT = 100*time.Microsecond + time.Duration(j%7)*10*time.Microsecond
			}
			g.AddSample(r.key, s)
		}
	}
	return g
}

type testServer struct {
	*Server
	URL string
	reg *prometheus.Registry
}

// newTestServer serves s over a real loopback listener (SSE needs one) and
// shuts it down at cleanup.
func newTestServer(t *testing.T, cfg Config, deps Deps) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer, cfg.Gatherer = reg, reg
	if cfg.Instance == "" {
		cfg.Instance = testInstance
	}
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of cancel")
		}
	})
	scheme := "http://"
	if cfg.TLS != nil || cfg.WebConfigFile != "" {
		scheme = "https://"
	}
	return &testServer{Server: s, URL: scheme + ln.Addr().String(), reg: reg}
}

// do runs one request against h in memory.
func do(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// sseEvent is one parsed server-sent event frame.
type sseEvent struct {
	Event    string
	ID       string
	Data     string
	Comments []string
	Retry    string
}

// sseClient reads frames from one event stream.
type sseClient struct {
	resp   *http.Response
	frames chan sseEvent
	errc   chan error
}

// openSSE connects to url and starts parsing frames in the background.
func openSSE(t *testing.T, url string, hdr map[string]string) *sseClient {
	t.Helper()
	c, resp := tryOpenSSE(t, url, hdr)
	if c == nil {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	return c
}

// tryOpenSSE returns nil and the response when the status is not 200.
func tryOpenSSE(t *testing.T, url string, hdr map[string]string) (*sseClient, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		return nil, resp
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	c := &sseClient{resp: resp, frames: make(chan sseEvent, 1<<16), errc: make(chan error, 1)}
	go c.read()
	return c, resp
}

func (c *sseClient) read() {
	br := bufio.NewReader(c.resp.Body)
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.errc <- err
			close(c.frames)
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			c.frames <- ev
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			ev.Comments = append(ev.Comments, strings.TrimSpace(line[1:]))
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "event":
				ev.Event = v
			case "id":
				ev.ID = v
			case "data":
				ev.Data = v
			case "retry":
				ev.Retry = v
			}
		}
	}
}

// next returns the next frame that carries an event (skipping retry and
// comment-only frames), failing after timeout.
func (c *sseClient) next(t *testing.T, timeout time.Duration) sseEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-c.frames:
			if !ok {
				t.Fatalf("stream ended: %v", <-c.errc)
			}
			if ev.Event == "" && ev.Data == "" {
				continue
			}
			return ev
		case <-deadline:
			t.Fatalf("no event within %v", timeout)
		}
	}
}

// until reads frames until pred holds or the stream ends, returning every
// frame read. It fails after timeout.
func (c *sseClient) until(t *testing.T, timeout time.Duration, pred func(sseEvent) bool) []sseEvent {
	t.Helper()
	deadline := time.After(timeout)
	var got []sseEvent
	for {
		select {
		case ev, ok := <-c.frames:
			if !ok {
				return got
			}
			got = append(got, ev)
			if pred(ev) {
				return got
			}
		case <-deadline:
			t.Fatalf("condition not met within %v; read %d frames, last %+v", timeout, len(got), last(got))
		}
	}
}

// ended waits for the stream to end (EOF or error).
func (c *sseClient) ended(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				if err := <-c.errc; err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "closed") {
					t.Logf("stream ended with %v", err)
				}
				return
			}
		case <-deadline:
			t.Fatalf("stream still open after %v", timeout)
		}
	}
}

func last(evs []sseEvent) sseEvent {
	if len(evs) == 0 {
		return sseEvent{}
	}
	return evs[len(evs)-1]
}

// testInstance is the SSE instance of newTestServer's servers.
const testInstance = "t1"

func idOf(t *testing.T, ev sseEvent) uint64 {
	t.Helper()
	inst, n, ok := sseid.Parse(ev.ID)
	if !ok || inst != testInstance {
		t.Fatalf("event %q: bad id %q (want %s-<seq>)", ev.Event, ev.ID, testInstance)
	}
	return n
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
