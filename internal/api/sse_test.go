package api

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/sseid"
)

const streamWait = 15 * time.Second // generous: CI has two shared cores

// addPeer adds one route to a new peer: node, link and route events.
func addPeer(g *graph.Graph, i int) {
	peer := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
	g.SetRoute(graph.RouteKey{Src: h1, Dst: peer, SrcPort: 33436}, hops(h1, leaf1, spine1, peer))
}

func TestSSESnapshotThenEvents(t *testing.T) {
	g := fixtureGraph(t)
	ts := newTestServer(t, DefaultConfig(), Deps{Graph: g})
	c := openSSE(t, ts.URL+"/v1/events/graph", nil)

	ev := c.next(t, streamWait)
	if ev.Event != sseSnapshot {
		t.Fatalf("first event %q, want snapshot", ev.Event)
	}
	var snap graph.Snapshot
	mustUnmarshal(t, []byte(ev.Data), &snap)
	if idOf(t, ev) != snap.EventID || len(snap.Routes) != 6 {
		t.Fatalf("snapshot id %s eventId %d with %d routes", ev.ID, snap.EventID, len(snap.Routes))
	}

	addPeer(g, 1)
	evs := c.until(t, streamWait, func(e sseEvent) bool { return e.Event == string(graph.EventRouteAdd) })
	prev := snap.EventID
	for _, e := range evs {
		if e.Event == "" {
			continue
		}
		id := idOf(t, e)
		if id != prev+1 {
			t.Errorf("event %q id %d after %d: ids must increase by one", e.Event, id, prev)
		}
		prev = id
		var ge graph.Event
		mustUnmarshal(t, []byte(e.Data), &ge)
		if ge.ID != id || string(ge.Type) != e.Event {
			t.Errorf("frame event %q id %d carries %q id %d", e.Event, id, ge.Type, ge.ID)
		}
	}
	var ge graph.Event
	mustUnmarshal(t, []byte(last(evs).Data), &ge)
	if ge.Route == nil || ge.Route.Dst != netip.MustParseAddr("198.19.0.1") {
		t.Errorf("route-add event carries %+v", ge.Route)
	}
}

func TestSSEResume(t *testing.T) {
	gcfg := graph.DefaultConfig()
	gcfg.EventBuffer = 16
	g := graph.New(gcfg)
	ts := newTestServer(t, DefaultConfig(), Deps{Graph: g})
	addPeer(g, 1)
	mark := g.Snapshot().EventID
	addPeer(g, 2) // missed while disconnected
	latest := g.Snapshot().EventID
	if latest <= mark {
		t.Fatalf("no events after %d", mark)
	}

	for _, how := range []string{"header", "query"} {
		t.Run(how, func(t *testing.T) {
			url, hdr := ts.URL+"/v1/events/graph", map[string]string{}
			if how == "header" {
				hdr["Last-Event-ID"] = sseid.Format(testInstance, mark)
			} else {
				url += "?lastEventId=" + sseid.Format(testInstance, mark)
			}
			c := openSSE(t, url, hdr)
			want := mark + 1
			for want <= latest {
				ev := c.next(t, streamWait)
				if ev.Event == sseSnapshot {
					t.Fatalf("resume within the buffer sent a snapshot")
				}
				if id := idOf(t, ev); id != want {
					t.Fatalf("replayed id %d, want %d", id, want)
				}
				want++
			}
		})
	}

	t.Run("too old", func(t *testing.T) {
		for i := 3; i < 20; i++ { // push mark out of the 16-event buffer
			addPeer(g, i)
		}
		c := openSSE(t, ts.URL+"/v1/events/graph", map[string]string{"Last-Event-ID": sseid.Format(testInstance, mark)})
		ev := c.next(t, streamWait)
		if ev.Event != sseSnapshot {
			t.Fatalf("resume from an id older than the buffer: first event %q, want snapshot", ev.Event)
		}
		if id := idOf(t, ev); id != g.Snapshot().EventID {
			t.Errorf("snapshot id %d, want %d", id, g.Snapshot().EventID)
		}
	})
	t.Run("garbage id", func(t *testing.T) {
		c := openSSE(t, ts.URL+"/v1/events/graph", map[string]string{"Last-Event-ID": "not-a-number"})
		if ev := c.next(t, streamWait); ev.Event != sseSnapshot {
			t.Fatalf("first event %q, want snapshot", ev.Event)
		}
	})
	t.Run("future id", func(t *testing.T) {
		c := openSSE(t, ts.URL+"/v1/events/graph", map[string]string{"Last-Event-ID": sseid.Format(testInstance, 999999)})
		if ev := c.next(t, streamWait); ev.Event != sseSnapshot {
			t.Fatalf("first event %q, want snapshot", ev.Event)
		}
	})
	// An id from another process (the agent restarted) names a seq that
	// this graph holds too: it must still get a snapshot, never a resume.
	for _, id := range []string{sseid.Format("other", mark), strconv.FormatUint(mark, 10)} {
		t.Run("other instance "+id, func(t *testing.T) {
			c := openSSE(t, ts.URL+"/v1/events/graph", map[string]string{"Last-Event-ID": id})
			if ev := c.next(t, streamWait); ev.Event != sseSnapshot {
				t.Fatalf("first event %q, want snapshot", ev.Event)
			}
		})
	}
}

func TestSSEHeartbeat(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Heartbeat = 50 * time.Millisecond
	ts := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	c := openSSE(t, ts.URL+"/v1/events/graph", nil)
	evs := c.until(t, streamWait, func(e sseEvent) bool {
		return len(e.Comments) > 0 && e.Comments[0] == "hb"
	})
	if evs[0].Retry == "" {
		t.Errorf("first frame %+v, want a retry: line", evs[0])
	}
}

// TestSSESlowClient holds the stream's writer (as a client that does not
// read would) while the graph produces more events than the stream's
// buffer: the producer must not block, and the client must get a resync
// event and the end of the stream.
func TestSSESlowClient(t *testing.T) {
	g := graph.New(graph.DefaultConfig())
	cfg := DefaultConfig()
	cfg.StreamBuffer = 8
	ts := newTestServer(t, cfg, Deps{Graph: g})

	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	blocked := make(chan struct{}, 1)
	var n int
	var mu sync.Mutex
	ts.beforeEvent = func() {
		mu.Lock()
		n++
		first := n == 2 // let the snapshot through, hold the first change
		mu.Unlock()
		if first {
			blocked <- struct{}{}
			<-gate
		}
	}

	c := openSSE(t, ts.URL+"/v1/events/graph", nil)
	if ev := c.next(t, streamWait); ev.Event != sseSnapshot {
		t.Fatalf("first event %q", ev.Event)
	}
	addPeer(g, 1)
	select {
	case <-blocked:
	case <-time.After(streamWait):
		t.Fatal("stream writer never picked up an event")
	}

	// The stream is stuck; the producer must still run at full speed.
	start := time.Now()
	for i := 2; i < 50; i++ {
		addPeer(g, i)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("producing 48 routes with a stuck stream took %v: producer blocked", d)
	}
	release()

	evs := c.until(t, streamWait, func(e sseEvent) bool { return e.Event == sseResync })
	r := last(evs)
	if r.Event != sseResync {
		t.Fatalf("stream ended without resync; last frame %+v", r)
	}
	var body resyncBody
	mustUnmarshal(t, []byte(r.Data), &body)
	if inst, seq, ok := sseid.Parse(body.LastEventID); body.Reason == "" || !ok || inst != testInstance || seq == 0 {
		t.Errorf("resync body %+v", body)
	}
	c.ended(t, streamWait)
	if got := counterValue(t, ts, "dnms_api_event_resyncs_total"); got != 1 {
		t.Errorf("dnms_api_event_resyncs_total %v, want 1", got)
	}
}

func TestSSEStreamLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxStreams, cfg.ReservedStreams = 2, 0
	g := graph.New(graph.DefaultConfig())
	ts := newTestServer(t, cfg, Deps{Graph: g, Aggregator: g})
	a := openSSE(t, ts.URL+"/v1/events/graph", nil)
	b := openSSE(t, ts.URL+"/v1/aggregator/events/graph", nil) // the limit is shared
	a.next(t, streamWait)
	b.next(t, streamWait)

	c, resp := tryOpenSSE(t, ts.URL+"/v1/events/graph", nil)
	if c != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third stream: status %d, want 503", resp.StatusCode)
	}
	var e errorBody
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
		t.Errorf("503 body: %v %+v", err, e)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Error("503 lacks CORS header")
	}

	a.resp.Body.Close()
	waitFor(t, streamWait, "a stream slot to free up", func() bool {
		c, resp := tryOpenSSE(t, ts.URL+"/v1/events/graph", nil)
		if c != nil {
			resp.Body.Close()
			return true
		}
		return false
	})
}

func TestSSEAuth(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Token = "tok"
	ts := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	if c, resp := tryOpenSSE(t, ts.URL+"/v1/events/graph", nil); c != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without token: %d, want 401", resp.StatusCode)
	}
	c := openSSE(t, ts.URL+"/v1/events/graph", map[string]string{"Authorization": "Bearer tok"})
	if ev := c.next(t, streamWait); ev.Event != sseSnapshot {
		t.Fatalf("first event %q", ev.Event)
	}
}

// counterValue sums every series of a metric family in ts's registry.
func counterValue(t *testing.T, ts *testServer, name string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// TestSSEOutlivesTimeouts: the server's read and write timeouts must not cut
// a long-lived stream (net/http's ReadTimeout would otherwise cancel the
// request once it expires).
func TestSSEOutlivesTimeouts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReadTimeout = 300 * time.Millisecond
	cfg.ReadHeaderTimeout = 300 * time.Millisecond
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.Heartbeat = 100 * time.Millisecond
	g := graph.New(graph.DefaultConfig())
	ts := newTestServer(t, cfg, Deps{Graph: g})
	c := openSSE(t, ts.URL+"/v1/events/graph", nil)
	c.next(t, streamWait)
	start := time.Now()
	hbs := 0
	c.until(t, streamWait, func(e sseEvent) bool {
		if len(e.Comments) > 0 && e.Comments[0] == "hb" {
			hbs++
		}
		return time.Since(start) > 1500*time.Millisecond
	})
	if hbs < 3 {
		t.Fatalf("only %d heartbeats in %v: stream cut", hbs, time.Since(start))
	}
	addPeer(g, 1)
	if ev := c.next(t, streamWait); ev.Event == "" {
		t.Fatalf("no event after the timeouts passed")
	}
}
