package graph

import (
	"math/rand/v2"
	"testing"
)

// TestSlotTableChunks: slots added and removed across chunk boundaries
// stay each route's own, in a table of n slots, and chunks are let go as
// it shrinks (one spare at most).
func TestSlotTableChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	var tab slotTable
	var live []*routeEntry
	check := func(step int) {
		t.Helper()
		if tab.len() != len(live) {
			t.Fatalf("step %d: %d slots for %d routes", step, tab.len(), len(live))
		}
		for _, r := range live {
			if s := tab.of(r); s == nil || s.r != r {
				t.Fatalf("step %d: route %p lost its slot %d", step, r, r.slot)
			}
		}
		if need := (tab.len() + slotChunk - 1) / slotChunk; len(tab.chunks) > need+1 {
			t.Fatalf("step %d: %d chunks for %d slots", step, len(tab.chunks), tab.len())
		}
	}
	for step := 0; step < 6; step++ {
		// Grow past a few chunks, then shrink to a random size.
		for range 2*slotChunk + rng.IntN(slotChunk) {
			r := &routeEntry{}
			tab.add(healthSlot{r: r})
			live = append(live, r)
		}
		check(step)
		keep := rng.IntN(len(live) + 1)
		rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		for _, r := range live[keep:] {
			tab.remove(r)
			if r.slot != -1 || tab.of(r) != nil {
				t.Fatalf("step %d: removed route keeps slot %d", step, r.slot)
			}
		}
		live = live[:keep]
		check(step)
	}
	for _, r := range live {
		tab.remove(r)
	}
	if tab.len() != 0 || len(tab.chunks) > 1 {
		t.Fatalf("empty table: %d slots, %d chunks", tab.len(), len(tab.chunks))
	}
}
