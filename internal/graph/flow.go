package graph

import (
	"math"
	"time"
)

// Per-flow state: what an agent keeps for each local route key instead of
// a ring of samples. A key's samples go into buckets: counters (samples,
// losses by direction), the RTTs' count, mean and sum of squared
// deviations (Welford), exact minimum and maximum, the send times of the
// oldest and newest sample, and an RTT sketch (sketch.go). Adding a sample
// touches one bucket: no allocation, no sort. Metrics merge buckets.
//
// The window is the route's, not the key's. A route counts the samples it
// takes; every bucketSize of them make one epoch, and a key opens a new
// bucket when the epoch changes, so the buckets of all the route's keys
// line up in time. The window is the newest whole epochs that together
// hold at least N (-metricRingSize) samples: N to N+bucketSize−1 samples,
// however the route's keys share them (ports taking turns do not stretch
// it). It holds fewer when the route is young, or when keys left the route
// and took their samples with them.

// bucketCap is the most samples a bucket holds (and the most pairs its
// sketch needs).
const bucketCap = 16

// flowBucket is what one key got in one epoch of its route. 112 bytes.
type flowBucket struct {
	epoch       int64
	first, last int64   // send times of the oldest and newest sample (see stamp)
	mean, m2    float64 // answered RTTs: mean and sum of squared deviations, seconds
	min, max    time.Duration
	n           uint8 // samples
	lost        uint8
	lostFwd     uint8
	lostRev     uint8
	// ver is the low 16 bits of the route's version (flowWindow.ver) at
	// the bucket's last change: what a delta stream (delta.go) compares
	// with the version it last sent. It fits the struct's padding.
	ver uint16
	rtt rttSketch
}

func (b *flowBucket) add(s Sample) {
	t := stamp(s.Sent)
	if b.n == 0 {
		b.first, b.last = t, t
	}
	b.first, b.last = min(b.first, t), max(b.last, t)
	b.n++
	if s.Lost {
		b.lost++
		switch s.Dir {
		case LossForward:
			b.lostFwd++
		case LossReverse:
			b.lostRev++
		}
		return
	}
	a := b.n - b.lost
	if a == 1 {
		b.min, b.max = s.RTT, s.RTT
	}
	b.min, b.max = min(b.min, s.RTT), max(b.max, s.RTT)
	v := s.RTT.Seconds()
	d := v - b.mean
	b.mean += d / float64(a)
	b.m2 += d * (v - b.mean)
	b.rtt.add(rttBin(s.RTT))
}

// noStamp is the stamp of the zero time.
const noStamp = math.MinInt64

// stamp is t in Unix nanoseconds, noStamp for the zero time.
func stamp(t time.Time) int64 {
	if t.IsZero() {
		return noStamp
	}
	return t.UnixNano()
}

func unstamp(n int64) time.Time {
	if n == noStamp {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// flowState is one key's buckets: a ring, newest at head, that grows up to
// the route's bucketsPerKey.
type flowState struct {
	ring []flowBucket
	head int
	// floor: samples sent before it are refused (set by ResetPeer).
	floor time.Time
	// The newest sample's send time and source, and the newest answered
	// sample's send time (noStamp when none).
	last       int64
	lastSource TimeSource
	lastAnswer int64
	// ver is the route's version (flowWindow.ver) at the key's last
	// change: a sample, a resolved loss, a reset, a move to this route.
	ver uint64
}

func newFlowState() *flowState { return &flowState{last: noStamp, lastAnswer: noStamp} }

// at is the i-th newest bucket (0: the newest).
func (f *flowState) at(i int) *flowBucket {
	j := f.head - i
	if j < 0 {
		j += len(f.ring)
	}
	return &f.ring[j]
}

// bucketFor returns the bucket a sample of epoch e goes into, opening one
// (over the oldest when the ring has size buckets) when the newest is of
// another epoch or full.
func (f *flowState) bucketFor(e int64, size int) *flowBucket {
	if len(f.ring) > 0 {
		if b := &f.ring[f.head]; b.epoch == e && b.n < bucketCap {
			return b
		}
	}
	switch {
	case f.ring == nil:
		f.ring = make([]flowBucket, 1, size)
		f.head = 0
	case len(f.ring) < cap(f.ring):
		f.ring = f.ring[:len(f.ring)+1]
		f.head = len(f.ring) - 1
	default:
		f.head = (f.head + 1) % len(f.ring)
	}
	f.ring[f.head] = flowBucket{epoch: e}
	return &f.ring[f.head]
}

// reset empties the state; samples sent before since are refused from now on.
func (f *flowState) reset(since time.Time) {
	f.ring, f.head = f.ring[:0], 0
	f.last, f.lastSource, f.lastAnswer = noStamp, "", noStamp
	if since.After(f.floor) {
		f.floor = since
	}
}

// rebase renumbers the buckets of a key that moved to another route so
// that its newest bucket is of the new route's epoch e, keeping their
// order.
func (f *flowState) rebase(e int64) {
	if f == nil || len(f.ring) == 0 {
		return
	}
	d := e - f.ring[f.head].epoch
	for i := range f.ring {
		f.ring[i].epoch += d
	}
}

// flowWindow is a route's side of the window: its sample count (epochs)
// and the RFC 3550 jitter over its answered samples in arrival order.
type flowWindow struct {
	size          int   // N: -metricRingSize
	bucketSize    int64 // samples per epoch
	bucketsPerKey int   // the most buckets a key keeps
	seq           int64 // samples taken
	jitter        float64
	prevRTT       float64
	haveRTT       bool
	// ver counts the changes to the route's flow state; the buckets and
	// keys it changed carry it (flowBucket.ver, flowState.ver).
	ver uint64
}

// newFlowWindow sizes a window of n samples: epochs of ⌈n/8⌉ samples (at
// most bucketCap), and enough buckets per key to cover the window even
// when one key has every sample.
func newFlowWindow(n int) flowWindow {
	n = max(n, 1)
	bs := min(max((n+7)/8, 1), bucketCap)
	return flowWindow{size: n, bucketSize: int64(bs), bucketsPerKey: (n+bs-1)/bs + 2}
}

// add puts s into f, a key of this route; false when the floor refuses it.
func (w *flowWindow) add(f *flowState, s Sample) bool {
	if s.Sent.Before(f.floor) {
		return false
	}
	if s.Resolves {
		b := f.resolve(s)
		if b != nil {
			w.stamp(f, b)
		}
		return b != nil
	}
	b := f.bucketFor(w.seq/w.bucketSize, w.bucketsPerKey)
	b.add(s)
	w.stamp(f, b)
	w.seq++
	if t := stamp(s.Sent); t >= f.last {
		f.last, f.lastSource = t, s.Source
	}
	if s.Lost {
		return true
	}
	f.lastAnswer = max(f.lastAnswer, stamp(s.Sent))
	v := s.RTT.Seconds()
	if w.haveRTT {
		// RFC 3550 §6.4.1: J += (|D| - J)/16, D the difference of
		// consecutive transit times (here round-trip times).
		w.jitter += (math.Abs(v-w.prevRTT) - w.jitter) / 16
	}
	w.prevRTT, w.haveRTT = v, true
	return true
}

// stamp records a change to f (and to its bucket b, when not nil) as the
// route's next version.
func (w *flowWindow) stamp(f *flowState, b *flowBucket) {
	w.ver++
	f.ver = w.ver
	if b != nil {
		b.ver = uint16(w.ver)
	}
}

// adopt takes f, a key's state that comes to this route (new, or moved
// from another route with its samples): its buckets are renumbered into
// the route's epochs and stamped with the route's version, whose counter
// they did not carry.
func (w *flowWindow) adopt(f *flowState) {
	if f == nil {
		return
	}
	f.rebase(w.epoch())
	w.stamp(f, nil)
	for i := range f.ring {
		f.ring[i].ver = uint16(w.ver)
	}
}

// resolve gives a loss of unknown direction reported earlier its direction
// s.Dir: in the newest bucket whose send times span s.Sent and that still
// holds such a loss. It returns that bucket, nil when none does (the bucket
// left the window, or the direction is still unknown).
func (f *flowState) resolve(s Sample) *flowBucket {
	if !s.Lost || (s.Dir != LossForward && s.Dir != LossReverse) {
		return nil
	}
	t := stamp(s.Sent)
	for i := range f.ring {
		b := f.at(i)
		if b.n == 0 || t < b.first || t > b.last || b.lost-b.lostFwd-b.lostRev == 0 {
			continue
		}
		if s.Dir == LossForward {
			b.lostFwd++
		} else {
			b.lostRev++
		}
		return b
	}
	return nil
}

// epoch is the epoch the route's next sample falls in.
func (w *flowWindow) epoch() int64 { return w.seq / w.bucketSize }

// resetJitter starts the jitter over (the route's samples were reset).
func (w *flowWindow) resetJitter() { w.jitter, w.prevRTT, w.haveRTT = 0, 0, false }

// take picks the window: how many of its newest buckets each of flows
// contributes (nil flows contribute none). It walks the epochs from the
// newest down, taking every bucket of an epoch at once, until N samples.
func (w *flowWindow) take(flows []*flowState) []int {
	take := make([]int, len(flows))
	for total := 0; total < w.size; {
		e, found := int64(0), false
		for i, f := range flows {
			if f != nil && take[i] < len(f.ring) {
				if ep := f.at(take[i]).epoch; !found || ep > e {
					e, found = ep, true
				}
			}
		}
		if !found {
			break
		}
		for i, f := range flows {
			for f != nil && take[i] < len(f.ring) && f.at(take[i]).epoch == e {
				total += int(f.at(take[i]).n)
				take[i]++
			}
		}
	}
	return take
}

// flowSum merges buckets.
type flowSum struct {
	n, lost, lostFwd, lostRev int
	answered                  int
	mean, m2                  float64
	min, max                  time.Duration
	first                     int64
}

func (s *flowSum) addBucket(b *flowBucket) {
	s.merge(flowSum{
		n: int(b.n), lost: int(b.lost), lostFwd: int(b.lostFwd), lostRev: int(b.lostRev),
		answered: int(b.n - b.lost), mean: b.mean, m2: b.m2, min: b.min, max: b.max, first: b.first,
	})
}

// merge adds o to s (Chan et al.'s pairwise update for the mean and the
// squared deviations).
func (s *flowSum) merge(o flowSum) {
	if o.n == 0 {
		return
	}
	if s.n == 0 {
		*s = o
		return
	}
	s.n += o.n
	s.lost += o.lost
	s.lostFwd += o.lostFwd
	s.lostRev += o.lostRev
	s.first = min(s.first, o.first)
	switch {
	case o.answered == 0:
		return
	case s.answered == 0:
		s.answered, s.mean, s.m2, s.min, s.max = o.answered, o.mean, o.m2, o.min, o.max
		return
	}
	na, nb := float64(s.answered), float64(o.answered)
	d := o.mean - s.mean
	s.answered += o.answered
	s.mean += d * nb / (na + nb)
	s.m2 += o.m2 + d*d*na*nb/(na+nb)
	s.min, s.max = min(s.min, o.min), max(s.max, o.max)
}

// metrics fills the counters and RTT moments of m; the quantiles come from
// h, the merged sketches of the same buckets.
func (s *flowSum) metrics(h *histogram) Metrics {
	m := Metrics{Samples: s.n, Lost: s.lost, LostForward: s.lostFwd, LostReverse: s.lostRev}
	if s.n == 0 {
		return m
	}
	m.Since = unstamp(s.first)
	m.Loss = float64(s.lost) / float64(s.n)
	m.LossForward = float64(s.lostFwd) / float64(s.n)
	m.LossReverse = float64(s.lostRev) / float64(s.n)
	if s.answered == 0 {
		return m
	}
	m.RTTMin, m.RTTMax = s.min.Seconds(), s.max.Seconds()
	m.RTTAvg = s.mean
	m.JitterStddev = math.Sqrt(max(s.m2, 0) / float64(s.answered))
	m.RTTP50 = h.quantile(0.50, m.RTTMin, m.RTTMax)
	m.RTTP99 = h.quantile(0.99, m.RTTMin, m.RTTMax)
	return m
}

// keyWindow is one key's part of a route window.
type keyWindow struct {
	sum      flowSum
	p10, p50 float64 // 0 when no answered sample
}

// summarize merges the window's buckets: the route's metrics (without the
// baselines) and each flow's part, in flows' order.
func (w *flowWindow) summarize(flows []*flowState) (Metrics, []keyWindow) {
	take := w.take(flows)
	route, key := getHistogram(), getHistogram()
	defer putHistogram(route)
	defer putHistogram(key)
	var all flowSum
	parts := make([]keyWindow, len(flows))
	last, source, haveSource := int64(noStamp), TimeSource(""), false
	for i, f := range flows {
		if f == nil {
			continue
		}
		kw := &parts[i]
		for j := range take[i] {
			b := f.at(j)
			kw.sum.addBucket(b)
			key.merge(&b.rtt)
			route.merge(&b.rtt)
		}
		if kw.sum.answered > 0 {
			lo, hi := kw.sum.min.Seconds(), kw.sum.max.Seconds()
			kw.p10, kw.p50 = key.quantile(0.10, lo, hi), key.quantile(0.50, lo, hi)
		}
		key.reset()
		all.merge(kw.sum)
		if take[i] > 0 && (!haveSource || f.last > last) {
			last, source, haveSource = f.last, f.lastSource, true
		}
	}
	m := all.metrics(route)
	m.Source = source
	if all.answered > 0 {
		m.JitterRFC3550 = w.jitter
	}
	return m, parts
}
