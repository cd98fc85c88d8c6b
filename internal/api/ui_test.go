package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestPage: the page and its assets load without the token (they hold no
// data), with a strict content security policy and the right types; the
// layout is data and needs the token.
func TestPage(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Token = "s3cret-token"
	g := fixtureGraph(t)
	h := newHandler(t, cfg, Deps{Graph: g, Aggregator: g})
	for _, c := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script type="module" src="/ui/app.js">`},
		{"/ui/", "text/html", `<script type="module" src="/ui/app.js">`},
		{"/ui/index.html", "text/html", `<script type="module" src="/ui/app.js">`},
		{"/ui/app.js", "text/javascript", "import"},
		{"/ui/style.css", "text/css", "--faulty"},
	} {
		rec := do(t, h, http.MethodGet, c.path, nil)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s without token: %d, want 200", c.path, rec.Code)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, c.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", c.path, ct, c.ctype)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, csp)
		}
		if !strings.Contains(rec.Body.String(), c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
	}
	if rec := do(t, h, http.MethodGet, "/ui/nope.js", nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET /ui/nope.js: %d, want 404", rec.Code)
	}
	// Data stays closed: the page's openness is by path, not a loophole.
	for _, p := range []string{"/v1/graph/layout", "/v1/aggregator/graph/layout", "/ui/../v1/graph"} {
		if rec := do(t, h, http.MethodGet, p, nil); rec.Code == http.StatusOK {
			t.Errorf("GET %s without token: 200", p)
		}
	}
	rec := do(t, h, http.MethodGet, "/v1/aggregator/graph/layout", map[string]string{"Authorization": "Bearer s3cret-token"})
	var l struct {
		Tiers int `json:"tiers"`
		Nodes []struct {
			ID   string `json:"id"`
			Tier int    `json:"tier"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("layout: %d %v: %s", rec.Code, err, rec.Body)
	}
	if l.Tiers < 2 || len(l.Nodes) != len(g.Snapshot().Nodes) {
		t.Errorf("layout: %d tiers, %d nodes; graph has %d nodes", l.Tiers, len(l.Nodes), len(g.Snapshot().Nodes))
	}
}
