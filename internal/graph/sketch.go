package graph

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// The RTT sketch is a log-linear histogram over integer nanoseconds (the
// layout of HdrHistogram): values below 2·sketchSub ns have a bin each;
// above, every power of two is cut into sketchSub equal bins. A bin's
// representative is its midpoint, so a quantile read from the bins is
// within 1/(2·sketchSub) = 0.39% of the exact nearest-rank quantile (see
// sketchRelErr). RTTs above 2^sketchMaxExp ns (18 minutes) share the top
// bin.
const (
	sketchSubBits = 7
	sketchSub     = 1 << sketchSubBits // bins per power of two
	sketchMaxExp  = 40
	// sketchBins is the number of bins (4,480): every index fits a uint16.
	sketchBins = (sketchMaxExp - sketchSubBits + 2) * sketchSub
	// sketchRelErr bounds a quantile's relative error.
	sketchRelErr = 1.0 / (2 * sketchSub)
)

// rttBin is d's bin.
func rttBin(d time.Duration) uint16 {
	ns := uint64(max(d, 0))
	if ns < 2*sketchSub {
		return uint16(ns)
	}
	ns = min(ns, 1<<(sketchMaxExp+1)-1)
	shift := bits.Len64(ns) - 1 - sketchSubBits // ≥ 1
	return uint16((shift+1)*sketchSub + int(ns>>shift) - sketchSub)
}

// binSeconds is the representative RTT of bin i (its midpoint), in seconds.
func binSeconds(i int) float64 {
	if i < 2*sketchSub {
		return float64(i) / 1e9
	}
	shift := i/sketchSub - 1
	lo := uint64(sketchSub+i%sketchSub) << shift
	return (float64(lo) + float64(uint64(1)<<shift-1)/2) / 1e9
}

// rttSketch is one bucket's RTTs: a sparse histogram of at most bucketCap
// (bin, count) pairs. A bucket closes at bucketCap samples, so it never
// runs out of pairs. 49 bytes.
type rttSketch struct {
	n   uint8
	cnt [bucketCap]uint8
	bin [bucketCap]uint16
}

func (s *rttSketch) add(b uint16) {
	for i := range s.n {
		if s.bin[i] == b {
			s.cnt[i]++
			return
		}
	}
	s.bin[s.n], s.cnt[s.n] = b, 1
	s.n++
}

// histogram is a dense count per bin, the scratch space where sketches are
// merged to read quantiles. Only [lo, hi] is in use; reset clears just that.
type histogram struct {
	c      [sketchBins]uint32
	lo, hi int
	n      int
}

var histograms = sync.Pool{New: func() any { return &histogram{lo: sketchBins, hi: -1} }}

func getHistogram() *histogram { return histograms.Get().(*histogram) }

func putHistogram(h *histogram) {
	h.reset()
	histograms.Put(h)
}

func (h *histogram) reset() {
	if h.lo <= h.hi {
		clear(h.c[h.lo : h.hi+1])
	}
	h.lo, h.hi, h.n = sketchBins, -1, 0
}

func (h *histogram) merge(s *rttSketch) {
	for i := range s.n {
		b := int(s.bin[i])
		h.c[b] += uint32(s.cnt[i])
		h.n += int(s.cnt[i])
		h.lo, h.hi = min(h.lo, b), max(h.hi, b)
	}
}

// quantile is the nearest-rank p-quantile in seconds (0 when empty),
// clamped to [lo, hi] (the exact minimum and maximum, which the nearest
// rank can never pass).
func (h *histogram) quantile(p, lo, hi float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := min(max(int(math.Ceil(p*float64(h.n))), 1), h.n)
	seen := 0
	for b := h.lo; b <= h.hi; b++ {
		seen += int(h.c[b])
		if seen >= rank {
			return min(max(binSeconds(b), lo), hi)
		}
	}
	return hi
}
