package graph

import (
	"testing"

	"github.com/dnms/dnms/internal/localize"
)

// TestStaleOriginLeftOutOfHealth: a stale origin's routes stay in the
// graph, but health stops counting their samples (and the cached rows
// change with the mark); marked fresh, they count again. Removing the
// origin forgets the mark.
func TestStaleOriginLeftOutOfHealth(t *testing.T) {
	g, _ := newTestGraph(t)
	lossy := Route{
		ID: RouteID([]string{hA, r1, hB}), Src: addr(hA), Dst: addr(hB),
		Hops: []string{hA, r1, hB}, Keys: []RouteKey{kAB},
		Metrics: Metrics{Samples: 200, Lost: 60, LostForward: 60, Loss: 0.3, Source: "user"},
	}
	g.ImportRoute("m1", lossy)
	faulty := func() int {
		n := 0
		for _, r := range g.Health() {
			if r.Verdict == localize.VerdictFaulty {
				n++
			}
		}
		return n
	}
	if n := faulty(); n == 0 {
		t.Fatal("fresh lossy route: no faulty link")
	}
	g.SetOriginStale("m1", true)
	if !g.OriginStale("m1") {
		t.Fatal("OriginStale false after SetOriginStale(true)")
	}
	if n := faulty(); n != 0 {
		t.Errorf("stale origin: %d faulty links, want 0 (its samples must not count)", n)
	}
	if len(g.Snapshot().Routes) != 1 {
		t.Error("a stale origin's route left the graph")
	}
	g.SetOriginStale("m1", false)
	if n := faulty(); n == 0 {
		t.Error("fresh again: no faulty link")
	}
	g.SetOriginStale("m1", true)
	g.RemoveOrigin("m1")
	if g.OriginStale("m1") {
		t.Error("RemoveOrigin kept the stale mark")
	}
}
