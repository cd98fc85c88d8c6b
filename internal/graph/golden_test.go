package graph

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// TestGoldenJSON pins the JSON shapes users depend on: the /v1/graph
// snapshot (also the input of `dnms health -f`), the health rows and an
// event. Rerun with -update after a deliberate change.
func TestGoldenJSON(t *testing.T) {
	g, clk := newTestGraph(t)
	kBA := kAB.Reverse()
	g.SetRoute(kAB, hops(hA, r1, "*", hB))
	g.SetRoute(kBA, hops(hB, r2, hA))
	for i := 0; i < 20; i++ {
		clk.Advance(100 * time.Millisecond)
		s := Sample{Seq: uint64(i + 1), Sent: clk.Now(), RTT: ms(1 + float64(i%3)/10), Source: "ebpf"}
		if i%5 == 4 {
			s = Sample{Seq: uint64(i + 1), Sent: clk.Now(), Lost: true, Dir: LossReverse, Source: "ebpf"}
		}
		g.AddSample(kAB, s)
		g.AddSample(kBA, Sample{Seq: uint64(i + 1), Sent: clk.Now(), RTT: ms(2), Source: "kernel"})
	}
	sub := g.Subscribe(0, 10)
	t.Cleanup(sub.Close)
	_, pc := g.SetRoute(kBA, hops(hB, r3, hA))
	var ev Event
	for e := range sub.C {
		if e.Type == EventPathChange {
			ev = e
			break
		}
	}
	if pc == nil || ev.Change == nil {
		t.Fatal("no path change")
	}
	snap := g.Snapshot()
	rows, err := HealthOf(snap)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{"snapshot": snap, "health": rows, "event": ev} {
		got, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		path := filepath.Join("testdata", name+".golden.json")
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s JSON changed (rerun with -update if deliberate):\n%s", name, got)
		}
	}
}
