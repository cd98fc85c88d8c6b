package aggregator

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
)

// TestHoggedMemberReported: a client holding every stream slot of an agent
// locks the aggregator out (503). The aggregator says so in the member's
// status (state, reason), keeps backing off no longer than the agent's
// Retry-After asks (not its own 30 s maximum), and gets in soon after the
// hog lets go.
func TestHoggedMemberReported(t *testing.T) {
	l := startLiveAgent(t, "agentA", func(c *api.Config) { c.MaxStreams, c.ReservedStreams = 1, 0 })
	k := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
	l.g.SetRoute(k, hopsOf(hA, leaf1, sp1, leaf2, hB))
	addSamples(l.g, k, 0, 10, 0)

	req, _ := http.NewRequest(http.MethodGet, l.srv.URL+EventsPath, nil)
	req.Header.Set("Authorization", "Bearer tok")
	hog, err := http.DefaultClient.Do(req)
	if err != nil || hog.StatusCode != http.StatusOK {
		t.Fatalf("hog: %v %v", err, hog)
	}
	h := startAggregator(t, func(c *Config) { c.Token, c.BackoffMax = "tok", 30*time.Second })
	h.a.AddMember("agentA", l.srv.URL)
	eventually(t, 10*time.Second, "hogged member reported", func() (bool, string) {
		st := h.a.Status()
		return len(st) == 1 && st[0].State == stateBackoff && strings.HasPrefix(st[0].Reason, "503") &&
			st[0].Reconnects >= 4, fmt.Sprintf("%+v", st)
	})
	hog.Body.Close()
	released := time.Now()
	waitMirrors(t, h.g, l)
	if d := time.Since(released); d > 8*time.Second {
		t.Errorf("got in %v after the hog left; Retry-After is 5 s", d)
	}
}

// TestStaleRoutesKept: a member whose stream is down keeps its routes in
// the aggregator's graph, marked stale in its status and counted in
// dnms_aggregator_stale_routes, until it comes back or leaves.
func TestStaleRoutesKept(t *testing.T) {
	l := startLiveAgent(t, "agentA", nil)
	k := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
	l.g.SetRoute(k, hopsOf(hA, leaf1, sp1, leaf2, hB))
	addSamples(l.g, k, 0, 10, 0)
	h := startAggregator(t, func(c *Config) { c.Token = "tok" })
	h.a.AddMember("agentA", l.srv.URL)
	waitMirrors(t, h.g, l)
	if st := h.a.Status()[0]; st.Stale || st.LastEvent == nil {
		t.Fatalf("connected member: %+v", st)
	}
	l.srv.CloseClientConnections()
	l.srv.Close()
	eventually(t, 10*time.Second, "stale", func() (bool, string) {
		st := h.a.Status()[0]
		return st.Stale && st.Routes == 1 && h.a.staleRoutes() == 1, fmt.Sprintf("%+v", st)
	})
	if got := routeView(h.g.Snapshot().Routes, "agentA"); len(got) != 1 {
		t.Fatalf("routes of the unreachable member: %v, want kept", got)
	}
}
