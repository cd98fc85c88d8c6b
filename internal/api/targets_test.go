package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestTargetRoutes(t *testing.T) {
	g := fixtureGraph(t)
	bare, err := New(DefaultConfig(), Deps{Graph: g})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/targets", "/v1/targets/gw", "/v1/paths", "/v1/aggregator/sd"} {
		if rec := do(t, bare.Handler(), http.MethodGet, p, nil); rec.Code != http.StatusNotFound {
			t.Errorf("%s without deps: %d, want 404", p, rec.Code)
		}
	}

	var pathsAsked string
	deps := Deps{Graph: g,
		Targets: func() any { return []map[string]string{{"name": "gw"}} },
		Target: func(name string) (any, bool) {
			return map[string]string{"name": name}, name == "gw"
		},
		Paths:     func(target string) any { pathsAsked = target; return []string{} },
		Discovery: func() []SDGroup { return nil },
	}
	s, err := New(DefaultConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/v1/targets", 200, `[{"name":"gw"}]`},
		{"/v1/targets/gw", 200, `{"name":"gw"}`},
		{"/v1/targets/nope", 404, `{"error":"no target \"nope\""}`},
		{"/v1/paths?target=dns", 200, `[]`},
		{"/v1/aggregator/sd", 200, `[]`}, // never null: Prometheus rejects it
	} {
		rec := do(t, h, http.MethodGet, c.path, nil)
		if rec.Code != c.code || strings.TrimSpace(rec.Body.String()) != c.body {
			t.Errorf("%s: %d %s, want %d %s", c.path, rec.Code, rec.Body, c.code, c.body)
		}
	}
	if pathsAsked != "dns" {
		t.Errorf("paths asked for %q, want dns", pathsAsked)
	}

	// HTTP SD: a list of {targets, labels}, JSON content type.
	deps.Discovery = func() []SDGroup {
		return []SDGroup{{Targets: []string{"198.19.1.10:12345"}, Labels: map[string]string{"__meta_dnms_node": "host1"}}}
	}
	s, _ = New(DefaultConfig(), deps)
	rec := do(t, s.Handler(), http.MethodGet, "/v1/aggregator/sd", nil)
	var groups []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &groups); err != nil || len(groups) != 1 ||
		!strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("sd: %s %v %q", rec.Body, err, rec.Header().Get("Content-Type"))
	}
	if _, ok := groups[0]["targets"].([]any); !ok {
		t.Fatalf("sd group without targets list: %s", rec.Body)
	}
}
