package graph

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"
)

// Delta batches (form 2 of the route-batch event): instead of each changed
// route's window metrics, a member ships the parts of its flow state that
// changed since its previous batch on the same stream, and the aggregator
// keeps a replica of each route's buckets and computes the route's metrics
// from it with the member's own code (flowWindow.summarize, finishMetrics).
//
// What a member ships for a route:
//   - every bucket whose content changed since the stream's previous batch
//     (flowBucket.ver), with its position in the key's ring: the replica
//     replaces it there, so applying one twice changes nothing;
//   - each changed key's ring head and length (a reset key has length 0);
//   - the state the window does not hold and the member keeps over time:
//     each key's RTT baseline when it changed (a baseline folds every
//     window it saw over -baselineWindow), the route's RFC 3550 jitter and
//     time source, and the hop RTTs when a trace changed them.
//
// The first batch that names a route on a stream (and one after 65,536
// changes of the route, past what a bucket's 16-bit stamp tells apart) is
// the route's whole state, marked full. Keys and path changes still come as
// route-add, route-update and path-change events at once; a key that joins
// a route (new, or moved with its samples) ships all its buckets.
//
// A bucket is named by its ring position, not by its epoch: a key's ring
// may hold two buckets of one epoch (a moved key keeps its renumbered
// newest bucket and opens one of the same epoch when that fills), and the
// position is what flowState.at reads, so the replica's window is the
// member's by construction.

// maxDeltaWindow bounds the window size a delta batch may name.
const maxDeltaWindow = 1 << 16

// DeltaBatch is the payload of a form-2 route-batch event.
type DeltaBatch struct {
	// T0 is the batch's time in Unix nanoseconds: bucket send times are
	// offsets from it.
	T0     int64        `json:"t0"`
	Routes []RouteDelta `json:"routes"`
}

// RouteDelta is one route's entry in a DeltaBatch.
type RouteDelta struct {
	ID string `json:"id"`
	// Full: the entry is the route's whole state (Window is set, every key
	// with buckets is listed whole); the replica starts over from it.
	Full   bool `json:"full,omitempty"`
	Window int  `json:"w,omitempty"` // the member's -metricRingSize (full only)
	// Jitter is the route's running RFC 3550 jitter, seconds.
	Jitter float64 `json:"j"`
	// Source is the window's time source, when it changed.
	Source *TimeSource `json:"src,omitempty"`
	// HopRTTs are the latest trace's per-hop RTTs, when they changed.
	HopRTTs []float64  `json:"hopRttSeconds,omitempty"`
	Keys    []KeyDelta `json:"k,omitempty"`
}

// KeyDelta is one key of a route (a flow of the route's src→dst, named by
// its source port): its ring's head and length, its changed buckets, and
// its RTT baseline when that changed.
type KeyDelta struct {
	Port uint16   `json:"p"`
	Head int      `json:"h"`
	Len  int      `json:"n"`
	Base *float64 `json:"base,omitempty"`
	// Buckets are the changed buckets, each an array of integers (see
	// encodeBucket and docs/api.md).
	Buckets Buckets `json:"b,omitempty"`
}

// deltaSent is what a delta stream last sent for a route.
type deltaSent struct {
	ver    uint64 // the route's flowWindow.ver
	source TimeSource
	hop    []float64  // the route's hopRTT slice (replaced, never modified)
	keys   []RouteKey // the key list and its baselines (same)
	bases  []float64
}

// base is what was last sent as k's baseline (k was i-th then, likely).
func (st *deltaSent) base(k RouteKey, i int) (float64, bool) {
	if i < len(st.keys) && st.keys[i] == k && i < len(st.bases) {
		return st.bases[i], true
	}
	if j, ok := slices.BinarySearchFunc(st.keys, k, compareKeys); ok && j < len(st.bases) {
		return st.bases[j], true
	}
	return 0, false
}

// changedSince says whether a bucket stamped b changed after version sent,
// the route being at version now (now−sent < 1<<16). A bucket that last
// changed 65,536 or more versions before sent may look changed: it is
// sent again, which changes nothing.
func changedSince(b uint16, sent, now uint64) bool {
	d := uint16(b - uint16(sent))
	return d != 0 && uint64(d) <= now-sent
}

// routeDeltaLocked is local route r's entry for delta subscription s, and
// records it as sent. Under g.mu (write).
func (s *Subscription) routeDeltaLocked(r *routeEntry, t0 int64) RouteDelta {
	m := r.metricsOf() // brings baseVals up to date
	r.mmu.Lock()
	keys, bases := r.sortedKeysLocked(), r.baseVals
	r.mmu.Unlock()
	if len(bases) != len(keys) {
		bases = make([]float64, len(keys))
	}
	st := s.sent[r]
	full := st == nil || r.win.ver-st.ver >= 1<<16
	rd := RouteDelta{ID: r.routeID(), Jitter: r.win.jitter}
	if full {
		rd.Full, rd.Window = true, r.win.size
	}
	if full || m.Source != st.source {
		src := m.Source
		rd.Source = &src
	}
	if full || !sameFloats(r.hopRTT, st.hop) {
		rd.HopRTTs = slices.Clone(r.hopRTT)
	}
	for i, k := range keys {
		f := r.keys[k]
		if f == nil {
			continue
		}
		changed := full || f.ver > st.ver
		prev, known := 0.0, false
		if !full {
			prev, known = st.base(k, i)
		}
		if !changed && known && prev == bases[i] {
			continue
		}
		kd := KeyDelta{Port: k.SrcPort, Head: f.head, Len: len(f.ring)}
		if !known || prev != bases[i] {
			b := bases[i]
			kd.Base = &b
		}
		if changed {
			for j := range f.ring {
				if b := &f.ring[j]; full || changedSince(b.ver, st.ver, r.win.ver) {
					kd.Buckets = append(kd.Buckets, encodeBucket(j, b, t0))
				}
			}
		}
		rd.Keys = append(rd.Keys, kd)
	}
	if st == nil {
		st = &deltaSent{}
		s.sent[r] = st
	}
	*st = deltaSent{ver: r.win.ver, source: m.Source, hop: r.hopRTT, keys: keys, bases: bases}
	return rd
}

// pruneSentLocked forgets what was sent for routes that are gone, once
// they are as many as the graph's routes.
func (s *Subscription) pruneSentLocked() {
	if len(s.sent) <= 2*len(s.g.routes)+64 {
		return
	}
	for r := range s.sent {
		if s.g.routes[r.ikey] != r {
			delete(s.sent, r)
		}
	}
}

func sameFloats(a, b []float64) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Bucket encoding: an array of integers,
//
//	[index, epoch, first−t0, last−first, n, lost, lostFwd, lostRev]
//
// followed, when the bucket has answered samples, by
//
//	[min ns, max ns, mean bits, m2 bits, bin, count, Δbin, count, ...]
//
// where mean and m2 (seconds, seconds²) are IEEE 754 bit patterns, so they
// arrive exactly, and the sketch's (bin, count) pairs are sorted by bin,
// each bin after the first written as its distance from the previous.
// Differences wrap in 64 bits, so any send time survives.
const (
	bucketHead = 8  // fields of every bucket
	bucketRTT  = 12 // fields before the sketch pairs of an answered one
)

func encodeBucket(idx int, b *flowBucket, t0 int64) []int64 {
	out := make([]int64, bucketHead, bucketRTT+2*int(b.rtt.n))
	out[0], out[1] = int64(idx), b.epoch
	out[2], out[3] = b.first-t0, b.last-b.first
	out[4], out[5], out[6], out[7] = int64(b.n), int64(b.lost), int64(b.lostFwd), int64(b.lostRev)
	if b.n == b.lost {
		return out
	}
	out = append(out, int64(b.min), int64(b.max), int64(math.Float64bits(b.mean)), int64(math.Float64bits(b.m2)))
	// The pairs sorted by bin (at most bucketCap of them: insertion).
	var bins [bucketCap]uint16
	var cnts [bucketCap]uint8
	n := int(b.rtt.n)
	for i := range n {
		j := i
		for ; j > 0 && bins[j-1] > b.rtt.bin[i]; j-- {
			bins[j], cnts[j] = bins[j-1], cnts[j-1]
		}
		bins[j], cnts[j] = b.rtt.bin[i], b.rtt.cnt[i]
	}
	prev := 0
	for i := range n {
		out = append(out, int64(int(bins[i])-prev), int64(cnts[i]))
		prev = int(bins[i])
	}
	return out
}

// decodeBucket checks one encoded bucket and returns it with its index.
func decodeBucket(v []int64, t0 int64) (int, flowBucket, error) {
	var b flowBucket
	if len(v) < bucketHead {
		return 0, b, fmt.Errorf("bucket has %d fields, want at least %d", len(v), bucketHead)
	}
	for i := 4; i < bucketHead; i++ {
		if v[i] < 0 || v[i] > bucketCap {
			return 0, b, fmt.Errorf("bucket count %d out of range", v[i])
		}
	}
	idx := v[0]
	b.epoch, b.first = v[1], t0+v[2]
	b.last = b.first + v[3]
	b.n, b.lost, b.lostFwd, b.lostRev = uint8(v[4]), uint8(v[5]), uint8(v[6]), uint8(v[7])
	if idx < 0 || idx >= maxDeltaWindow {
		return 0, b, fmt.Errorf("bucket index %d out of range", idx)
	}
	if b.lost > b.n || int(b.lostFwd)+int(b.lostRev) > int(b.lost) {
		return 0, b, fmt.Errorf("bucket of %d samples with %d lost (%d forward, %d reverse)", b.n, b.lost, b.lostFwd, b.lostRev)
	}
	answered := int(b.n - b.lost)
	if answered == 0 {
		if len(v) != bucketHead {
			return 0, b, errors.New("bucket without answered samples has RTT fields")
		}
		return int(idx), b, nil
	}
	if len(v) < bucketRTT+2 || (len(v)-bucketRTT)%2 != 0 || (len(v)-bucketRTT)/2 > bucketCap {
		return 0, b, fmt.Errorf("bucket of %d answered samples has %d fields", answered, len(v))
	}
	b.min, b.max = time.Duration(v[8]), time.Duration(v[9])
	b.mean, b.m2 = math.Float64frombits(uint64(v[10])), math.Float64frombits(uint64(v[11]))
	if b.min > b.max || !finite(b.mean) || !finite(b.m2) || b.m2 < 0 {
		return 0, b, fmt.Errorf("bucket RTTs: min %v max %v mean %v m2 %v", b.min, b.max, b.mean, b.m2)
	}
	bin, total := int64(0), 0
	for i := bucketRTT; i < len(v); i += 2 {
		d, c := v[i], v[i+1]
		if (i > bucketRTT && d <= 0) || d < 0 || c < 1 || c > bucketCap {
			return 0, b, fmt.Errorf("bucket sketch pair (%d, %d) out of order or range", d, c)
		}
		if bin += d; bin >= sketchBins {
			return 0, b, fmt.Errorf("sketch bin %d out of range", bin)
		}
		b.rtt.bin[b.rtt.n], b.rtt.cnt[b.rtt.n] = uint16(bin), uint8(c)
		b.rtt.n++
		total += int(c)
	}
	if total != answered {
		return 0, b, fmt.Errorf("bucket sketch holds %d RTTs, want %d", total, answered)
	}
	return int(idx), b, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// Validate checks a decoded delta batch on its own (the graph checks it
// against its replicas when it applies it).
func (d *DeltaBatch) Validate() error {
	for i := range d.Routes {
		rd := &d.Routes[i]
		if err := rd.validate(d.T0); err != nil {
			return fmt.Errorf("route %q: %w", rd.ID, err)
		}
	}
	return nil
}

func (rd *RouteDelta) validate(t0 int64) error {
	if rd.ID == "" {
		return errors.New("no route id")
	}
	if rd.Full != (rd.Window != 0) || rd.Window < 0 || rd.Window > maxDeltaWindow {
		return fmt.Errorf("window %d (full %v): want 1..%d exactly on full entries", rd.Window, rd.Full, maxDeltaWindow)
	}
	if !finite(rd.Jitter) || rd.Jitter < 0 {
		return fmt.Errorf("jitter %v", rd.Jitter)
	}
	for i, kd := range rd.Keys {
		if rd.Full && kd.Len > newFlowWindow(rd.Window).bucketsPerKey {
			return fmt.Errorf("key %d: ring of %d buckets, a window of %d keeps %d", kd.Port, kd.Len, rd.Window, newFlowWindow(rd.Window).bucketsPerKey)
		}
		for _, o := range rd.Keys[:i] {
			if o.Port == kd.Port {
				return fmt.Errorf("key %d listed twice", kd.Port)
			}
		}
		if err := kd.validate(t0); err != nil {
			return fmt.Errorf("key %d: %w", kd.Port, err)
		}
	}
	return nil
}

func (kd *KeyDelta) validate(t0 int64) error {
	if kd.Len < 0 || kd.Len > maxDeltaWindow || kd.Head < 0 || (kd.Head >= kd.Len && kd.Len > 0) || (kd.Len == 0 && kd.Head != 0) {
		return fmt.Errorf("ring head %d length %d", kd.Head, kd.Len)
	}
	if kd.Base != nil && (!finite(*kd.Base) || *kd.Base < 0) {
		return fmt.Errorf("baseline %v", *kd.Base)
	}
	seen := make(map[int]bool, len(kd.Buckets))
	for _, v := range kd.Buckets {
		idx, _, err := decodeBucket(v, t0)
		if err != nil {
			return err
		}
		if idx >= kd.Len || seen[idx] {
			return fmt.Errorf("bucket index %d twice or past the ring's %d", idx, kd.Len)
		}
		seen[idx] = true
	}
	return nil
}

// replica is the aggregator's copy of an imported route's flow state, as
// its origin's delta batches described it.
type replica struct {
	win    flowWindow
	source TimeSource
	keys   []replicaKey
}

type replicaKey struct {
	port uint16
	base float64
	f    flowState
}

func (rp *replica) key(port uint16) *replicaKey {
	for i := range rp.keys {
		if rp.keys[i].port == port {
			return &rp.keys[i]
		}
	}
	return nil
}

// ImportDeltas applies a member's delta batch (form 2 of the route-batch
// event, already checked with Validate) to the routes imported from
// origin, all under one lock: each entry updates the route's replica, and
// the route's metrics are computed from it. hide, when not nil, says that
// a route's computed metrics must not be shown (they are imported empty,
// as ImportRoute's caller does for routes that straddle a restart).
// Entries naming a route origin does not have are skipped. It fails,
// changing nothing, when an entry does not fit the replica it updates (a
// partial entry for a route without one, a key that is new to the replica
// but not sent whole, a ring longer than the window allows).
func (g *Graph) ImportDeltas(origin string, d DeltaBatch, hide func(src, dst netip.Addr, m Metrics) bool) (int, error) {
	g.lockChange()
	defer g.mu.Unlock()
	rs := make([]*routeEntry, len(d.Routes))
	for i := range d.Routes {
		rd := &d.Routes[i]
		r := g.routes[routeIKey(origin, false, rd.ID)]
		if r == nil || r.local {
			continue
		}
		if err := fits(r.rep, rd); err != nil {
			return 0, fmt.Errorf("route %s: %w", rd.ID, err)
		}
		rs[i] = r
	}
	n := 0
	for i, r := range rs {
		if r == nil {
			continue
		}
		rd := &d.Routes[i]
		if rd.Full {
			r.rep = &replica{win: newFlowWindow(rd.Window)}
		}
		r.rep.apply(rd, d.T0)
		m := r.rep.metrics(r.importedKeys())
		if hide != nil && hide(r.srcAddr(), r.dstAddr(), m) {
			m = Metrics{}
		}
		r.mmu.Lock()
		r.metrics = m
		r.mmu.Unlock()
		g.syncSlotLocked(r)
		if len(rd.HopRTTs) > 0 && len(rd.HopRTTs) == r.nHops() {
			r.hopRTT = slices.Clone(rd.HopRTTs)
		}
		g.maybeUpdateLocked(r)
		n++
	}
	return n, nil
}

// fits checks rd against rp, the replica it updates (nil when none).
func fits(rp *replica, rd *RouteDelta) error {
	if rd.Full {
		rp = &replica{win: newFlowWindow(rd.Window)}
	} else if rp == nil {
		return errors.New("partial entry for a route without a replica")
	}
	for _, kd := range rd.Keys {
		if kd.Len > rp.win.bucketsPerKey {
			return fmt.Errorf("key %d: ring of %d buckets, the window keeps %d", kd.Port, kd.Len, rp.win.bucketsPerKey)
		}
		// A ring grows one bucket at a time, each sent as it is made: a
		// new key comes whole, a known one with every slot it gained.
		have := 0
		if rk := rp.key(kd.Port); rk != nil {
			have = len(rk.f.ring)
		}
		if n := newSlots(&kd, have); n < kd.Len-have {
			return fmt.Errorf("key %d: ring grew from %d to %d buckets with %d of the new ones", kd.Port, have, kd.Len, n)
		}
	}
	return nil
}

// newSlots counts kd's buckets at ring indices from have on (Validate
// made the indices distinct).
func newSlots(kd *KeyDelta, have int) int {
	n := 0
	for _, v := range kd.Buckets {
		if v[0] >= int64(have) {
			n++
		}
	}
	return n
}

// apply updates rp with rd (checked by Validate and fits).
func (rp *replica) apply(rd *RouteDelta, t0 int64) {
	rp.win.jitter = rd.Jitter
	if rd.Source != nil {
		rp.source = *rd.Source
	}
	for _, kd := range rd.Keys {
		k := rp.key(kd.Port)
		if k == nil {
			rp.keys = append(rp.keys, replicaKey{port: kd.Port, f: *newFlowState()})
			k = &rp.keys[len(rp.keys)-1]
		}
		if kd.Base != nil {
			k.base = *kd.Base
		}
		f := &k.f
		if kd.Len > cap(f.ring) { // once: rings grow to the window's size
			f.ring = append(make([]flowBucket, 0, rp.win.bucketsPerKey), f.ring...)
		}
		f.ring = f.ring[:kd.Len]
		f.head = kd.Head
		for _, v := range kd.Buckets {
			idx, b, _ := decodeBucket(v, t0)
			f.ring[idx] = b
		}
	}
}

// metrics computes the route's metrics from the replica for keys (the
// route's keys, sorted), with the member's code, and drops the replica's
// keys that are no longer the route's.
func (rp *replica) metrics(keys []RouteKey) Metrics {
	flows := make([]*flowState, len(keys))
	bases := make([]float64, len(keys))
	for i, k := range keys {
		if rk := rp.key(k.SrcPort); rk != nil {
			flows[i], bases[i] = &rk.f, rk.base
		}
	}
	m, parts := rp.win.summarize(flows)
	finishMetrics(&m, parts, bases)
	m.Source = rp.source
	rp.keys = slices.DeleteFunc(rp.keys, func(rk replicaKey) bool {
		return !slices.ContainsFunc(keys, func(k RouteKey) bool { return k.SrcPort == rk.port })
	})
	return m
}
