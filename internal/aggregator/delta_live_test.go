package aggregator

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
)

// formOneGraph is an agent graph as a member that predates delta batches
// serves it: it can batch, but only in form 1 (no SubscribeDeltas).
type formOneGraph struct{ g *graph.Graph }

func (f formOneGraph) Snapshot() graph.Snapshot   { return f.g.Snapshot() }
func (f formOneGraph) Health() []graph.LinkHealth { return f.g.Health() }
func (f formOneGraph) Subscribe(after uint64, buf int) *graph.Subscription {
	return f.g.Subscribe(after, buf)
}
func (f formOneGraph) SubscribeBatched(after uint64, buf int) *graph.Subscription {
	return f.g.SubscribeBatched(after, buf)
}

// startFormOneMember serves g's API as an older member would (form 1
// batches every 100 ms).
func startFormOneMember(t *testing.T, g *graph.Graph) *httptest.Server {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Token = "tok"
	cfg.Heartbeat = 200 * time.Millisecond
	cfg.Logger = testLogger()
	cfg.BatchInterval = 100 * time.Millisecond
	s, err := api.New(cfg, api.Deps{Graph: formOneGraph{g}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { s.Close(); srv.Close() })
	return srv
}

// streamHeaders opens an event stream (with the live agents' token) and
// returns its response headers.
func streamHeaders(t *testing.T, url string) http.Header {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header
}

// waitConnected waits until n members' streams are connected and synced.
func waitConnected(t *testing.T, h *harness, n int) {
	t.Helper()
	eventually(t, 10*time.Second, "streams connected", func() (bool, string) {
		sts := h.a.Status()
		ok := len(sts) == n
		for _, st := range sts {
			ok = ok && st.State == stateConnected && st.Routes > 0
		}
		return ok, fmt.Sprintf("%+v", sts)
	})
}

// sameMetrics waits until agg holds, under origin, every route of member
// with exactly the member's keys and metrics (every field).
func sameMetrics(t *testing.T, agg, member *graph.Graph, origin string) {
	t.Helper()
	eventually(t, 20*time.Second, origin+"'s exact metrics", func() (bool, string) {
		member.Flush()
		theirs := map[string]graph.Route{}
		for _, r := range agg.Snapshot().Routes {
			if r.Origin == origin {
				theirs[r.ID] = r
			}
		}
		mine := member.Snapshot().Routes
		if len(mine) == 0 || len(mine) != len(theirs) {
			return false, fmt.Sprintf("%d routes, want %d", len(theirs), len(mine))
		}
		for _, r := range mine {
			a := theirs[r.ID]
			if !reflect.DeepEqual(r.Keys, a.Keys) || !reflect.DeepEqual(r.Metrics, a.Metrics) {
				return false, fmt.Sprintf("route %s:\nmember     %v %+v\naggregator %v %+v", r.ID, r.Keys, r.Metrics, a.Keys, a.Metrics)
			}
		}
		return true, ""
	})
}

// TestLiveDeltaFallback: an aggregator that asks for deltas
// (-aggregateDeltas) streams from a member that sends delta batches and
// from one that predates them. Each stream is in the
// form its member knows (the member status says which), and the
// aggregator ends with both members' exact metrics, every field, after
// keys moved, were reset and took turns.
func TestLiveDeltaFallback(t *testing.T) {
	// What an older member reads from the aggregator's query: the first
	// value, form 1.
	if q, _ := url.ParseQuery("batch=1&batch=2"); q.Get("batch") != "1" {
		t.Fatalf("an older member would read batch=%q", q.Get("batch"))
	}
	newer := startLiveAgent(t, "newer", func(c *api.Config) { c.BatchInterval = 100 * time.Millisecond })
	gcfg := graph.DefaultConfig()
	gcfg.CoalesceInterval = 50 * time.Millisecond
	older := graph.New(gcfg)
	oldSrv := startFormOneMember(t, older)

	for q, want := range map[string][2]string{
		"?batch=1&batch=2": {"100ms", "2"}, "?batch=2": {"100ms", "2"}, "?batch=1": {"100ms", ""}, "": {"", ""},
	} {
		h := streamHeaders(t, newer.srv.URL+EventsPath+q)
		if got := [2]string{h.Get(api.BatchHeader), h.Get(api.BatchFormHeader)}; got != want {
			t.Fatalf("GET %s%s: batch headers %q, want %q", EventsPath, q, got, want)
		}
	}

	h := startAggregator(t, func(c *Config) { c.Token = "tok"; c.Deltas = true })
	h.a.AddMember("newer", newer.srv.URL)
	h.a.AddMember("older", oldSrv.URL)
	var keys []graph.RouteKey
	for i := range 8 {
		dst := netip.AddrFrom4([4]byte{198, 18, 7, byte(1 + i/4)})
		keys = append(keys, graph.RouteKey{Src: hA, Dst: dst, SrcPort: uint16(33436 + i%4)})
	}
	for _, g := range []*graph.Graph{newer.g, older} {
		for _, k := range keys {
			g.SetRoute(k, hopsOf(hA, leaf1, sp1, leaf2, k.Dst))
		}
	}
	waitConnected(t, h, 2)
	// Without Deltas (the default) the delta-capable member streams
	// window metrics.
	h1 := startAggregator(t, func(c *Config) { c.Token = "tok" })
	h1.a.AddMember("newer", newer.srv.URL)
	waitConnected(t, h1, 1)
	for _, st := range h1.a.Status() {
		if st.Name == "newer" && st.BatchForm != api.BatchFormMetrics {
			t.Fatalf("default aggregator: batch form %d, want %d", st.BatchForm, api.BatchFormMetrics)
		}
	}

	// Each round's changes must reach the aggregator in batches, not in
	// the first snapshot: wait for a batch after each.
	for _, g := range []*graph.Graph{newer.g, older} {
		for round := range 12 {
			before := testutil.ToFloat64(h.a.met.batchRoutes)
			for i, k := range keys {
				if (i+round)%5 == 0 {
					g.SetRoute(k, hopsOf(hA, leaf1, []netip.Addr{sp1, sp2}[(i+round)%2], leaf2, k.Dst))
				}
				if (i+round)%3 != 0 { // ports take turns
					addSamples(g, k, round*7, 7, 2+round%5)
				}
			}
			if round == 6 {
				g.ResetPeer(keys[0].Dst, time.Date(2026, 11, 23, 19, 0, 5, 0, time.UTC))
			}
			eventually(t, 10*time.Second, fmt.Sprintf("a batch after round %d", round), func() (bool, string) {
				g.Flush()
				return testutil.ToFloat64(h.a.met.batchRoutes) > before, ""
			})
		}
	}
	sameMetrics(t, h.g, newer.g, "newer")
	sameMetrics(t, h.g, older, "older")
	forms := map[string]int{}
	for _, st := range h.a.Status() {
		forms[st.Name] = st.BatchForm
	}
	if forms["newer"] != api.BatchFormDeltas || forms["older"] != api.BatchFormMetrics {
		t.Fatalf("batch forms %v, want newer %d and older %d", forms, api.BatchFormDeltas, api.BatchFormMetrics)
	}
	if r := streamResyncs(h); r != 0 {
		t.Fatalf("%v fresh snapshots", r)
	}
}
