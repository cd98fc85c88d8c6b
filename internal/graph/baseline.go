package graph

import "time"

// baselineBuckets is how many buckets a baseline window is cut into.
const baselineBuckets = 8

// baseline is a route's long-window RTT floor: the lowest window 10th
// percentile of one key seen in each of the last baselineBuckets buckets of the
// window; the baseline is the lowest of them. It is kept per hop list (the
// route's internal key) in the graph, so a key that leaves a path and comes
// back finds the path's baseline, and a different path starts its own.
type baseline struct {
	bucket time.Duration
	lows   [baselineBuckets]float64
	nums   [baselineBuckets]int64 // bucket number of each slot; 0: empty
}

func newBaseline(window time.Duration) *baseline {
	return &baseline{bucket: max(window/baselineBuckets, time.Nanosecond)}
}

// observe folds a key's window low percentile seen at now into the window and
// returns the baseline (0 when low is not positive and nothing is known).
func (b *baseline) observe(now time.Time, low float64) float64 {
	n := now.UnixNano()/int64(b.bucket) + 1
	if low > 0 {
		s := n % baselineBuckets
		if b.nums[s] != n || b.lows[s] > low {
			b.lows[s] = low
		}
		b.nums[s] = n
	}
	return b.floor(n)
}

// floor is the lowest bucket value within the window ending at bucket n.
func (b *baseline) floor(n int64) float64 {
	best := 0.0
	for s, num := range b.nums {
		if num == 0 || num <= n-baselineBuckets {
			continue
		}
		if best == 0 || b.lows[s] < best {
			best = b.lows[s]
		}
	}
	return best
}

// stale says the newest bucket is outside the window ending at now.
func (b *baseline) stale(now time.Time) bool {
	return b.floor(now.UnixNano()/int64(b.bucket)+1) == 0
}
