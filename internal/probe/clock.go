package probe

import (
	"sync/atomic"
	"time"
	_ "unsafe" // for go:linkname
)

// nanotime is the runtime's CLOCK_MONOTONIC read (vDSO, no allocation, ~20
// ns): the same clock as bpf_ktime_get_ns, so user, kernel (converted) and
// ebpf stamps all live on one time line.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Monotonic returns CLOCK_MONOTONIC in nanoseconds.
func Monotonic() int64 { return nanotime() }

// realToMono converts CLOCK_REALTIME stamps (what SO_TIMESTAMPING software
// stamps are) to CLOCK_MONOTONIC. The offset is sampled with the monotonic
// reads bracketing the realtime read and refreshed periodically; between
// refreshes an NTP slew of at most 500 ppm moves it by ≤ 50 µs per 100 ms —
// in practice far less — and an NTP step shows as one bad refresh interval.
type realToMono struct {
	off atomic.Int64 // realtime - monotonic, ns
}

func (c *realToMono) refresh() {
	best := int64(1<<63 - 1)
	var off int64
	// Take the tightest of a few brackets so that preemption between the
	// reads does not skew the offset.
	for range 3 {
		m1 := nanotime()
		r := time.Now().UnixNano()
		m2 := nanotime()
		if w := m2 - m1; w < best {
			best = w
			off = r - (m1+m2)/2
		}
	}
	c.off.Store(off)
}

func (c *realToMono) mono(realNs int64) int64 { return realNs - c.off.Load() }
