package localize

import "slices"

// Estimator runs the estimator over and over on a route set that changes a
// little between runs (the aggregator's health after every change batch,
// issue 10), cheaper than Run each time:
//
//   - When the routes are the same as last run's (same hops by number,
//     same ports, in the same order; only their counts moved), the index of
//     nodes and links and the reverse route of every key are reused. When
//     routes came, went or moved but cross the same nodes and links, the
//     index is patched (patchIndex) and only the reverse routes are found
//     anew.
//   - The loss fit starts from the last run's per-link estimates (warm
//     start; links are matched by their end nodes' names, so routes may
//     come and go) instead of from "no loss", and stops by the same rule as
//     a cold fit: no sweep moves a link's expected lost probes by a
//     twentieth of a probe. Links on no lossy observation start at 1, as
//     they do cold, so a healed link clears in the first run that no longer
//     sees its losses.
//   - Its working arrays are kept and reused.
//
// The rows are Run's within the fit's tolerance (TestEstimatorWarmMatchesCold).
// An Estimator is not safe for concurrent use; the zero value is ready.
// Between runs it keeps ≈ 160 B per route (the index, the reverse routes,
// the fit's arrays: 44 MiB at 275k routes), none of it pointers.
type Estimator struct {
	// The last run's topology, for reuse.
	ix          *index
	keyOff, rev []int32
	denseOf     []int32  // caller's node number → ix's node number, -1 when unused
	ports       []uint16 // every route's ports, in order (split by keyOff)
	// The last run's estimates by ix's link number: penalised (selection)
	// and final.
	pen, fin []float64
	scratch  fitBufs
	// Runs and reuses, for tests and benchmarks.
	runs, reused, warm, patched int
	// Sweeps of the last run's loss fit, all phases together.
	lastSweeps int
}

// RunNumbered is RunNumbered (the package function) for the next run of
// the same route set.
func (e *Estimator) RunNumbered(names []string, in []Input, c Config) []Row {
	return e.run(in, names, c)
}

// Stats reports how many runs the estimator made, in how many it reused
// the last run's index, in how many the fit started warm, and the loss
// fit's sweeps in the last run.
func (e *Estimator) Stats() (runs, reused, warm, lastSweeps int) {
	return e.runs, e.reused, e.warm, e.lastSweeps
}

func (e *Estimator) run(in []Input, names []string, c Config) []Row {
	c = c.WithDefaults()
	e.runs++
	var ix *index
	var keyOff, rev []int32
	if names != nil && e.sameTopology(in, names) {
		ix, keyOff, rev = e.ix, e.keyOff, e.rev
		e.reused++
	} else {
		if names != nil {
			ix = e.patchIndex(in, names)
		}
		if ix != nil {
			e.patched++
		} else {
			ix = indexLinks(in, names)
		}
		keyOff, rev = reverses(in, ix)
		e.denseOf = e.denseOf[:0] // names nil: hops by name, nothing to reuse
		if names != nil {
			e.keepTopology(in, names, keyOff, rev, ix)
		}
	}
	start := e.warmStart(ix)
	rows := estimate(in, ix, keyOff, rev, c, start, &e.scratch)
	e.ix, e.pen, e.fin, e.lastSweeps = ix, start.pen, start.fin, start.sweeps
	if start.warm {
		e.warm++
	}
	return rows
}

// sameTopology reports whether in has the routes of the last run: the
// same hops (the same node names by number) and ports, in the same order.
func (e *Estimator) sameTopology(in []Input, names []string) bool {
	ix := e.ix
	if ix == nil || len(e.denseOf) == 0 || len(in)+1 != len(ix.hopOff) {
		return false
	}
	// Every used number must still name the node it named.
	for n, d := range e.denseOf {
		if d >= 0 && (n >= len(names) || names[n] != ix.names[d]) {
			return false
		}
	}
	for p := range in {
		r := &in[p]
		hs := ix.nodes[ix.hopOff[p]:ix.hopOff[p+1]]
		if len(r.Nodes) != len(hs) {
			return false
		}
		for j, n := range r.Nodes {
			if n < 0 || int(n) >= len(e.denseOf) || e.denseOf[n] != hs[j] {
				return false
			}
		}
		if !slices.Equal(r.Ports, e.ports[e.keyOff[p]:e.keyOff[p+1]]) {
			return false
		}
	}
	return true
}

// patchIndex builds the index of in from the last run's when in crosses
// the same nodes and links (routes came, went or moved, as the graph's
// slot table does it: appended, or swap-deleted): a route unchanged at its
// position keeps its link list, another has its links looked up among the
// last run's by their end nodes. The result is indexLinks(in, names)'s.
// It returns nil when a node or a link appeared or is no longer crossed
// (the numbering changes: the caller builds the index anew).
func (e *Estimator) patchIndex(in []Input, names []string) *index {
	prev := e.ix
	if prev == nil || len(e.denseOf) == 0 {
		return nil
	}
	for n, d := range e.denseOf {
		if d >= 0 && (n >= len(names) || names[n] != prev.names[d]) {
			return nil
		}
	}
	ix := &index{names: prev.names, linkEnds: prev.linkEnds,
		hopOff: make([]int32, len(in)+1), linkOff: make([]int32, len(in)+1),
		nodes: make([]int32, 0, len(prev.nodes)), links: make([]int32, 0, len(prev.links))}
	for p := range in {
		ix.hopOff[p], ix.linkOff[p] = int32(len(ix.nodes)), int32(len(ix.links))
		for _, n := range in[p].Nodes {
			if n < 0 || int(n) >= len(e.denseOf) || e.denseOf[n] < 0 {
				return nil // a node the last run did not have
			}
			ix.nodes = append(ix.nodes, e.denseOf[n])
		}
		hs := ix.nodes[ix.hopOff[p]:]
		if p+1 < len(prev.hopOff) && slices.Equal(hs, prev.nodes[prev.hopOff[p]:prev.hopOff[p+1]]) {
			ix.links = append(ix.links, prev.routeLinks(p)...)
			continue
		}
		start := len(ix.links)
		for j := 1; j < len(hs); j++ {
			l, ok := slices.BinarySearch(prev.linkEnds, uint64(hs[j-1])<<32|uint64(hs[j]))
			if !ok {
				return nil // a new link
			}
			if !slices.Contains(ix.links[start:], int32(l)) {
				ix.links = append(ix.links, int32(l))
			}
		}
	}
	ix.hopOff[len(in)], ix.linkOff[len(in)] = int32(len(ix.nodes)), int32(len(ix.links))
	// Every node and link must still be crossed, or indexLinks would
	// number them without it.
	used := make([]bool, len(ix.names)+len(ix.linkEnds))
	for _, n := range ix.nodes {
		used[n] = true
	}
	for _, l := range ix.links {
		used[len(ix.names)+int(l)] = true
	}
	if slices.Contains(used, false) {
		return nil
	}
	return ix
}

// keepTopology remembers in's routes (numbered by names) and what was built
// of them.
func (e *Estimator) keepTopology(in []Input, names []string, keyOff, rev []int32, ix *index) {
	e.keyOff, e.rev = keyOff, rev
	e.denseOf = slices.Grow(e.denseOf[:0], len(names))[:len(names)]
	for i := range e.denseOf {
		e.denseOf[i] = -1
	}
	for p := range in {
		hs := ix.nodes[ix.hopOff[p]:ix.hopOff[p+1]]
		for j, n := range in[p].Nodes {
			e.denseOf[n] = hs[j]
		}
	}
	e.ports = e.ports[:0]
	for p := range in {
		e.ports = append(e.ports, in[p].Ports...)
	}
}

// warmStart maps the last run's estimates onto ix's links: by number when
// the links are the same, else by their end nodes' names (a merge of the
// two sorted name lists). Links new to ix start cold.
func (e *Estimator) warmStart(ix *index) *fitStart {
	s := &fitStart{}
	prev := e.ix
	if prev == nil || len(e.pen) != prev.nLinks() {
		return s
	}
	s.warm = true
	if prev == ix || (slices.Equal(prev.names, ix.names) && slices.Equal(prev.linkEnds, ix.linkEnds)) {
		s.pen, s.fin = e.pen, e.fin
		return s
	}
	// old[i]: the previous number of ix's node i, -1 when new.
	old := make([]int32, len(ix.names))
	i, j := 0, 0
	for i < len(ix.names) {
		switch {
		case j >= len(prev.names) || ix.names[i] < prev.names[j]:
			old[i] = -1
			i++
		case ix.names[i] > prev.names[j]:
			j++
		default:
			old[i] = int32(j)
			i, j = i+1, j+1
		}
	}
	s.pen, s.fin = make([]float64, ix.nLinks()), make([]float64, ix.nLinks())
	for l, k := range ix.linkEnds {
		s.pen[l], s.fin[l] = 1, 1
		a, b := old[k>>32], old[k&0xffffffff]
		if a < 0 || b < 0 {
			continue
		}
		if m, ok := slices.BinarySearch(prev.linkEnds, uint64(a)<<32|uint64(b)); ok {
			s.pen[l], s.fin[l] = e.pen[m], e.fin[m]
		}
	}
	return s
}

// fitStart carries a fit's starting point in (pen, fin: nil for a cold
// start) and its result out (the penalised and final estimates by link).
type fitStart struct {
	warm     bool
	pen, fin []float64
	sweeps   int
}

// estimate is Run's body after indexing.
func estimate(in []Input, ix *index, keyOff, rev []int32, c Config, start *fitStart, b *fitBufs) []Row {
	o := splitDirectionsIn(in, ix, keyOff, rev, b)
	b.obsOff, b.obsLinks = o.off, o.links
	rows := make([]Row, ix.nLinks())
	seedScore(o, ix, rows)
	lossVerdicts(fitLossFrom(o, len(rows), c, start, b), c, rows)
	b.trials, b.losses = o.trials, o.losses
	localizeDelay(in, ix, keyOff, rev, c, rows, b)
	SortBySuspicion(rows)
	return rows
}

// fitBufs are the arrays one run fills, kept by an Estimator for the next
// (nil: fresh ones).
type fitBufs struct {
	obsOff, obsLinks []int32
	trials, losses   []float64
	byOff, byObs     []int32
	st               []fitObs
	x                []float64
	// the delay half's
	dOff, dLinks, dRoute []int32
	dExcess              []float64
	mark                 []int32
	dByOff, dByObs       []int32
}

// grow returns s resized to n, reusing its array when it is large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
