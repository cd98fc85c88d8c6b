package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/graph"
)

// savedGraph writes the fixture graph as `curl .../v1/graph > FILE` would
// (the same document as testdata/graph.golden.json) and returns its path.
func savedGraph(t testing.TB) string {
	t.Helper()
	b, err := json.MarshalIndent(normSnapshot(fixtureGraph(t).Snapshot()), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "graph.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func runHealth(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := RunHealth(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestRunHealthGood(t *testing.T) {
	savedGraph := savedGraph(t)
	out, _, err := runHealth(t, "", "-f", savedGraph)
	if err != nil {
		t.Fatalf("RunHealth: %v", err)
	}
	golden(t, "health.golden.txt", []byte(out))

	// -o json prints the same rows as /v1/graph/edges/health.
	out, _, err = runHealth(t, "", "-f", savedGraph, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []graph.LinkHealth
	mustUnmarshal(t, []byte(out), &rows)
	h := newHandler(t, DefaultConfig(), Deps{Graph: fixtureGraph(t)})
	var apiRows []graph.LinkHealth
	mustUnmarshal(t, do(t, h, "GET", "/v1/graph/edges/health", nil).Body.Bytes(), &apiRows)
	if len(rows) != len(apiRows) || rows[0] != apiRows[0] {
		t.Errorf("health -o json differs from the API's rows: %d vs %d rows, top %+v vs %+v", len(rows), len(apiRows), rows[0], apiRows[0])
	}

	// stdin and -top.
	in, err := os.ReadFile(savedGraph)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err = runHealth(t, string(in), "-f", "-", "-top", "2", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	mustUnmarshal(t, []byte(out), &rows)
	if len(rows) != 2 || rows[0] != apiRows[0] {
		t.Errorf("-top 2 from stdin: %d rows, top %+v", len(rows), rows)
	}
	if !strings.Contains(string(out), `"verdict": "faulty"`) {
		t.Errorf("no faulty verdict in %s", out)
	}
}

func TestRunHealthUsage(t *testing.T) {
	savedGraph := savedGraph(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no file", nil, "-f FILE is required"},
		{"bad format", []string{"-f", savedGraph, "-o", "yaml"}, "want text or json"},
		{"negative top", []string{"-f", savedGraph, "-top", "-1"}, "-top -1"},
		{"stray arg", []string{"-f", savedGraph, "extra"}, "unexpected argument"},
		{"missing file", []string{"-f", filepath.Join(t.TempDir(), "nope.json")}, "no such file"},
		{"unknown flag", []string{"-x"}, "flag provided but not defined"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := runHealth(t, "", c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	_, stderr, err := runHealth(t, "", "-h")
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "usage: dnms health") {
		t.Errorf("-h: %v, stderr %q", err, stderr)
	}
}

func TestRunHealthRejects(t *testing.T) {
	good, err := os.ReadFile(savedGraph(t))
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(s *graph.Snapshot)) string {
		var s graph.Snapshot
		if err := json.Unmarshal(good, &s); err != nil {
			t.Fatal(err)
		}
		f(&s)
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cases := []struct {
		name, input, want string
	}{
		{"empty", "", "empty document"},
		{"blank", " \n\t", "empty document"},
		{"truncated", string(good[:len(good)/2]), "malformed JSON"},
		{"array", "[]", "not a graph document"},
		{"health rows", `[{"src":"a","dst":"b"}]`, "not a graph document"},
		{"scalar", "42", "not a graph document"},
		{"wrong type", `{"routes": "many"}`, "line 1 column"},
		{"trailing", string(good) + "{}", "trailing data"},
		{"no routes", `{"eventId": 3, "nodes": [], "edges": []}`, "no routes"},
		{"route through unknown link", mutate(func(s *graph.Snapshot) {
			s.Links = s.Links[1:] // drop one edge some route uses
		}), "not a known edge"},
		{"unknown node", mutate(func(s *graph.Snapshot) {
			s.Routes[0].Hops[1] = "198.18.9.9"
		}), "not a known node"},
		{"negative samples", mutate(func(s *graph.Snapshot) {
			s.Routes[0].Metrics.Samples = -1
		}), "negative"},
		{"lost beyond samples", mutate(func(s *graph.Snapshot) {
			s.Routes[0].Metrics.Lost = s.Routes[0].Metrics.Samples + 1
		}), "lost"},
		{"negative loss ratio", mutate(func(s *graph.Snapshot) {
			s.Routes[0].Metrics.Loss = -0.5
		}), "out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := runHealth(t, c.input, "-f", "-")
			if err == nil {
				t.Fatalf("accepted; printed:\n%s", out)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "health: stdin: ") {
				t.Errorf("error %q, want one naming stdin and containing %q", err, c.want)
			}
		})
	}
}

// FuzzHealthInput: no document makes `dnms health` panic.
func FuzzHealthInput(f *testing.F) {
	if good, err := os.ReadFile(savedGraph(f)); err == nil {
		f.Add(good)
	}
	f.Add([]byte(`{"nodes":[{"id":"a"},{"id":"b"}],"edges":[{"src":"a","dst":"b"}],"routes":[{"id":"r","hops":["a","b"],"metrics":{"samples":10,"lost":1}}]}`))
	f.Add([]byte(`{"routes":[{"id":"r","hops":["a"]}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out, errb bytes.Buffer
		_ = RunHealth([]string{"-f", "-"}, bytes.NewReader(data), &out, &errb)
	})
}

// TestHealthSortEstimate: ?sort=estimate orders by verdict then estimate,
// the default stays by suspicion, and a bad sort is a 400; `dnms health
// -sort estimate` prints the same order.
func TestHealthSortEstimate(t *testing.T) {
	h := newHandler(t, DefaultConfig(), Deps{Graph: fixtureGraph(t)})
	var bySusp, byEst []graph.LinkHealth
	mustUnmarshal(t, do(t, h, "GET", "/v1/graph/edges/health", nil).Body.Bytes(), &bySusp)
	mustUnmarshal(t, do(t, h, "GET", "/v1/graph/edges/health?sort=estimate", nil).Body.Bytes(), &byEst)
	if len(bySusp) != len(byEst) || len(byEst) < 2 {
		t.Fatalf("%d and %d rows", len(bySusp), len(byEst))
	}
	for i := 1; i < len(bySusp); i++ {
		if bySusp[i].Suspicion > bySusp[i-1].Suspicion {
			t.Fatalf("default order: row %d suspicion %v above row %d's %v", i, bySusp[i].Suspicion, i-1, bySusp[i-1].Suspicion)
		}
	}
	rank := map[graph.Verdict]int{graph.VerdictFaulty: 0, graph.VerdictSuspect: 1, graph.VerdictSlow: 2, graph.VerdictOK: 3}
	for i := 1; i < len(byEst); i++ {
		a, b := byEst[i-1], byEst[i]
		if rank[a.Verdict] > rank[b.Verdict] || (a.Verdict == b.Verdict && a.EstimatedLoss < b.EstimatedLoss) {
			t.Fatalf("sort=estimate: row %d (%s %.4f) after row %d (%s %.4f)", i, b.Verdict, b.EstimatedLoss, i-1, a.Verdict, a.EstimatedLoss)
		}
	}
	if rec := do(t, h, "GET", "/v1/graph/edges/health?sort=loss", nil); rec.Code != 400 {
		t.Errorf("sort=loss: status %d, want 400", rec.Code)
	}
	out, _, err := runHealth(t, "", "-f", savedGraph(t), "-sort", "estimate", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cli []graph.LinkHealth
	mustUnmarshal(t, []byte(out), &cli)
	if len(cli) != len(byEst) || cli[0] != byEst[0] {
		t.Errorf("health -sort estimate top %+v, API %+v", cli[0], byEst[0])
	}
	if _, _, err := runHealth(t, "", "-f", savedGraph(t), "-sort", "x"); err == nil || !strings.Contains(err.Error(), "-sort") {
		t.Errorf("-sort x: error %v", err)
	}
}
