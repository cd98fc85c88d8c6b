package mapper

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// The /v1/mapper/peers and /v1/mapper/routemap documents are pinned.
func TestJSONGolden(t *testing.T) {
	cfg := testConfig(3)
	cfg.Jitter = 0
	tr := &fakeTracer{}
	m, _ := newTestMapper(t, cfg, tr, newFakeSink())
	m.AddPeer(peerA)
	runFor(t, m, tr, 3)
	for name, doc := range map[string]any{"peers.json": m.Peers(), "routemap.json": m.RouteMap()} {
		got, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestJSONGolden -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s changed:\n%s\nwant:\n%s", name, got, want)
		}
	}
}
