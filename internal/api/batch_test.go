package api

import (
	"fmt"
	"testing"
	"time"
)

// TestNextBatch: on a fake clock, a member's batches fall once per interval
// at its phase, whatever time it starts from.
func TestNextBatch(t *testing.T) {
	const iv = 5 * time.Second
	phase := 1234 * time.Millisecond
	now := time.Date(2026, 12, 5, 1, 2, 3, 456_000_000, time.UTC)
	var prev time.Time
	for i := range 20 {
		next := NextBatch(now, iv, phase)
		if !next.After(now) || next.Sub(now) > iv {
			t.Fatalf("step %d: next batch %v for now %v, want within (now, now+%v]", i, next, now, iv)
		}
		if off := time.Duration(next.UnixNano() % int64(iv)); off != phase {
			t.Fatalf("step %d: batch at offset %v in the interval, want the phase %v", i, off, phase)
		}
		if i > 0 && next.Sub(prev) != iv {
			t.Fatalf("step %d: batches %v apart, want one per %v", i, next.Sub(prev), iv)
		}
		prev = next
		now = next // the stream asks again right at the batch
	}
	if got := NextBatch(prev.Add(-time.Nanosecond), iv, phase); !got.Equal(prev) {
		t.Fatalf("just before a batch: next %v, want %v", got, prev)
	}
}

// TestBatchPhase: phases are stable per name and spread over the interval
// (and over graph.Flush's one-second tick), so members do not batch at once.
func TestBatchPhase(t *testing.T) {
	const iv = 5 * time.Second
	if BatchPhase("node-1", iv) != BatchPhase("node-1", iv) {
		t.Fatal("phase is not deterministic")
	}
	if BatchPhase("node-1", 0) != 0 {
		t.Fatal("phase with no interval")
	}
	const n, buckets = 1000, 10
	var inInterval, inSecond [buckets]int
	for i := range n {
		p := BatchPhase(fmt.Sprintf("host-%04d-198.18.%d.%d", i, i/250, i%250), iv)
		if p < 0 || p >= iv {
			t.Fatalf("phase %v outside [0, %v)", p, iv)
		}
		inInterval[p*buckets/iv]++
		inSecond[(p%time.Second)*buckets/time.Second]++
	}
	for b := range buckets {
		// Uniform would be 100 per bucket; a lock-step would put 1000 in one.
		if inInterval[b] < 60 || inInterval[b] > 140 || inSecond[b] < 60 || inSecond[b] > 140 {
			t.Fatalf("phases not spread: per tenth of the interval %v, per tenth of a second %v", inInterval, inSecond)
		}
	}
}
