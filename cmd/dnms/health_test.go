package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
)

// TestHealthzMatchesDocs serves /healthz with the agent's healthMeta and
// checks that docs/api.md's field table lists exactly the fields served and
// that its example uses only those.
func TestHealthzMatchesDocs(t *testing.T) {
	cfg := api.DefaultConfig()
	srv, err := api.New(cfg, api.Deps{Graph: graph.New(graph.DefaultConfig()), Meta: func() any {
		return healthMeta{Version: "v", Role: "agent", Node: "n", TimeSource: "ebpf",
			EBPF: ebpfHealth{Attached: true, Mode: "tcx", Ifaces: []string{"eth0"}, Reflector: true}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	served := jsonKeys(t, rec.Body.Bytes())

	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	sec := string(doc)
	start := strings.Index(sec, "### `GET /healthz`")
	if start < 0 {
		t.Fatal("docs/api.md has no ### `GET /healthz` section")
	}
	sec = sec[start:]
	if end := strings.Index(sec[3:], "\n#"); end >= 0 {
		sec = sec[:end+3]
	}
	var table []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Za-z.]+)` \\|").FindAllStringSubmatch(sec, -1) {
		table = append(table, m[1])
	}
	slices.Sort(table)
	if !slices.Equal(table, served) {
		t.Errorf("docs/api.md /healthz table lists %v\nthe server serves %v", table, served)
	}
	ex := regexp.MustCompile("(?s)```json\n(.*?)```").FindStringSubmatch(sec)
	if ex == nil {
		t.Fatal("docs/api.md /healthz has no JSON example")
	}
	for _, k := range jsonKeys(t, []byte(ex[1])) {
		if !slices.Contains(served, k) {
			t.Errorf("docs/api.md /healthz example has %q, which the server does not serve", k)
		}
	}
}

// jsonKeys returns the sorted key paths of a JSON object ("ebpf.mode").
func jsonKeys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			out = append(out, prefix+k)
		}
	}
	walk("", m)
	slices.Sort(out)
	return out
}
