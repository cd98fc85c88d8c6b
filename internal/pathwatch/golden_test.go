package pathwatch

import (
	"encoding/json"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// TestPathsJSONGolden pins the /v1/paths document (the web UI reads it).
func TestPathsJSONGolden(t *testing.T) {
	w, _ := newWatcher(t, func(c *Config) { c.Window = 2 })
	w.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.1", "198.18.9.1"))
	w.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.1", "198.18.9.1"))
	w.ObservePath(flow, route(3, "198.18.1.1", "*", "198.18.0.2", "198.18.9.1"))
	w.ObserveSample(flow, 0, true)
	b, err := json.MarshalIndent(w.Histories(""), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	const p = "testdata/paths.golden.json"
	if *update {
		os.WriteFile(p, b, 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if string(want) != string(b) {
		t.Fatalf("%s differs; got:\n%s", p, b)
	}
}
