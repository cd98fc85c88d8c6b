package graph

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/dnms/dnms/internal/localize"
)

// TestLabDumpDeadLinkClearing replays the aggregator's graph from the lab
// (TestLocalizeHardAndSlow/dead-link, DNMS_LAB_TRACE, 2 s after the dead
// leaf1→spine1 direction was repaired; real samples, not the estimator's
// model): the repaired direction is still the only link with a verdict.
// Spreading each route's lost acks evenly over its keys' reverse paths
// blamed host1→leaf1 as well, in most polls of that recovery; the per-key
// counts put each key's lost acks on its own reverse path.
func TestLabDumpDeadLinkClearing(t *testing.T) {
	b, err := os.ReadFile("testdata/lab-dead-link-clearing.json")
	if err != nil {
		t.Fatal(err)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	rows, err := HealthOf(s)
	if err != nil {
		t.Fatal(err)
	}
	// The aggregator's own path: the routes imported into a graph, whose
	// health reads its kept inputs (healthstore.go), not the snapshot.
	g := New(DefaultConfig())
	for _, r := range s.Routes {
		g.ImportRoute(r.Origin, r)
	}
	for what, rows := range map[string][]LinkHealth{"snapshot": rows, "imported": g.Health()} {
		var bad []string
		for _, r := range rows {
			if r.Verdict != localize.VerdictOK {
				bad = append(bad, r.Src+"→"+r.Dst+" "+string(r.Verdict))
			}
		}
		if want := "198.18.1.1→198.18.0.1 faulty"; len(bad) != 1 || bad[0] != want {
			t.Errorf("%s: links with a verdict %v, want [%s]", what, bad, want)
		}
	}
}
