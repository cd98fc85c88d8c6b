package localize

import (
	"cmp"
	"slices"
)

// obs is what the probes say, in flat arrays. Observation p crosses
// links[off[p]:off[p+1]]; trials probes crossed it and losses of them were
// lost on it. The first observations are the routes, in input order (a
// route's forward probes plus the acks of the routes whose reverse it is);
// round trips of routes whose losses have no known direction follow.
type obs struct {
	off    []int32
	links  []int32
	trials []float64
	losses []float64
	// shares are the reverse losses of routes with several reverse routes
	// (keys merged on one forward route whose acks took different paths),
	// and the losses of unknown direction of such routes' round trips:
	// split evenly at first, then by the fit (resplit).
	shares []share
}

// share is one route's losses to be divided over its target observations.
type share struct {
	targets []int32
	lost    float64
	cur     []float64 // what each target has now; nil: even
	// capped: no target gets more losses than its trials (round trips,
	// whose targets carry only this route's probes).
	capped bool
}

func (o *obs) of(p int) []int32 { return o.links[o.off[p]:o.off[p+1]] }

// addUnion adds an observation over the union of two link lists.
func (o *obs) addUnion(a, b []int32, trials, losses float64) {
	start := len(o.links)
	o.links = append(o.links, a...)
	for _, l := range b {
		if !slices.Contains(o.links[start:], l) {
			o.links = append(o.links, l)
		}
	}
	o.off = append(o.off, int32(len(o.links)))
	o.trials = append(o.trials, trials)
	o.losses = append(o.losses, losses)
}

// splitLoss divides a route's lost probes into forward and reverse losses.
// Losses of unknown direction are split in the proportion of the route's
// known-direction losses (a lost ack is as likely among them as among the
// known ones), whether or not the reverse route is in the set (without it
// the reverse part is dropped by the caller: a dead reverse path must not
// leak its unknown-direction share onto the forward links); when no
// direction is known at all they count as forward.
func splitLoss(r Input) (fwd, rev float64) {
	lost := min(max(r.Lost, 0), r.Samples)
	kf := min(max(r.LostForward, 0), lost)
	kr := min(max(r.LostReverse, 0), lost-kf)
	unknown := float64(lost - kf - kr)
	fwd, rev = float64(kf), float64(kr)
	if kf+kr > 0 {
		share := fwd / (fwd + rev)
		return fwd + unknown*share, rev + unknown*(1-share)
	}
	return fwd + unknown, rev
}

// reverses finds the reverse route of every key (dst→src, same port),
// matched by endpoint nodes: rev[keyOff[p]+i] is the route of the reverse
// of route p's i-th port, or -1 when it is not in the set. Routes are
// sorted by their (source, destination) pair, then input order, so the
// reverse of a key is looked for among the few routes of the opposite
// pair, found by binary search (once per pair): one sort of the routes, not
// a map of slices (at 275 k routes the map and its 10⁵ small slices cost
// 3× more).
func reverses(in []Input, ix *index) (keyOff, rev []int32) {
	type ended struct {
		pair uint64 // src<<32 | dst
		p    int32
	}
	pair := func(s, d int32) uint64 { return uint64(uint32(s))<<32 | uint64(uint32(d)) }
	byPair := make([]ended, 0, len(in))
	nports := 0
	for p := range in {
		nports += len(in[p].Ports)
		if in[p].hopCount() >= 2 {
			s, d := ix.ends(p)
			byPair = append(byPair, ended{pair(s, d), int32(p)})
		}
	}
	slices.SortFunc(byPair, func(a, b ended) int {
		if c := cmp.Compare(a.pair, b.pair); c != 0 {
			return c
		}
		return cmp.Compare(a.p, b.p)
	})
	routes := make([]int32, len(byPair)) // byPair's routes, for withPort
	for i, e := range byPair {
		routes[i] = e.p
	}
	// One search per pair, not per route: route p's candidates are
	// routes[back[2p]:back[2p+1]] (empty for a route of fewer than 2 hops
	// or whose opposite pair has no route).
	type group struct {
		pair   uint64
		lo, hi int32
	}
	var groups []group
	for i := 0; i < len(byPair); {
		j := i + 1
		for j < len(byPair) && byPair[j].pair == byPair[i].pair {
			j++
		}
		groups = append(groups, group{byPair[i].pair, int32(i), int32(j)})
		i = j
	}
	back := make([]int32, 2*len(in))
	for _, g := range groups {
		want := g.pair<<32 | g.pair>>32
		k, ok := slices.BinarySearchFunc(groups, want, func(x group, w uint64) int { return cmp.Compare(x.pair, w) })
		if !ok {
			continue
		}
		for _, e := range byPair[g.lo:g.hi] {
			back[2*e.p], back[2*e.p+1] = groups[k].lo, groups[k].hi
		}
	}
	keyOff = make([]int32, len(in)+1)
	rev = make([]int32, 0, nports)
	for p := range in {
		keyOff[p] = int32(len(rev))
		cands := routes[back[2*p]:back[2*p+1]]
		for _, port := range in[p].Ports {
			rev = append(rev, withPort(in, cands, port))
		}
	}
	keyOff[len(in)] = int32(len(rev))
	return keyOff, rev
}

// withPort is the first of routes (in input order) with a key on port, -1
// when none has.
func withPort(in []Input, routes []int32, port uint16) int32 {
	for _, q := range routes {
		if slices.Contains(in[q].Ports, port) {
			return q
		}
	}
	return -1
}

// found drops the -1s of a reverses list: rev itself when it has none,
// else the others in buf (reused: the result is valid until the next
// call with the same buf).
func found(rev []int32, buf *[]int32) []int32 {
	if !slices.Contains(rev, -1) {
		return rev
	}
	out := (*buf)[:0]
	for _, q := range rev {
		if q >= 0 {
			out = append(out, q)
		}
	}
	*buf = out
	return out
}

// splitDirections turns routes into loss observations.
//
// A route's forward losses (and its share of the losses of unknown
// direction, see splitLoss) are charged to its own links, over all its
// samples. Its reverse losses are charged to the links of its reverse
// route(s) (the path the acks took), over the probes that reached the
// reflector. When no route in the set is its reverse (an agent alone knows
// only its own routes), the reverse losses and the ack trials are left out
// rather than guessed. A route whose keys' reverses are different routes
// splits them evenly by key. A route with losses but no direction at all
// (no reflector counters) is one round-trip observation per reverse route
// over the forward and reverse links together.
func splitDirections(in []Input, ix *index, revOff, rev []int32) *obs {
	return splitDirectionsIn(in, ix, revOff, rev, &fitBufs{})
}

// splitDirectionsIn is splitDirections in b's arrays.
func splitDirectionsIn(in []Input, ix *index, revOff, rev []int32, b *fitBufs) *obs {
	o := &obs{
		off:    append(b.obsOff[:0], ix.linkOff...),
		links:  append(b.obsLinks[:0], ix.links...),
		trials: grow(b.trials, len(in)),
		losses: grow(b.losses, len(in)),
	}
	clear(o.trials)
	clear(o.losses)
	var buf []int32
	for p, r := range in {
		if r.Samples <= 0 || r.hopCount() < 2 {
			continue
		}
		targets := found(rev[revOff[p]:revOff[p+1]], &buf)
		if r.LostForward <= 0 && r.LostReverse <= 0 && r.Lost > 0 && len(targets) > 0 {
			// Round trips, one per reverse route. With per-key counts
			// each takes its own keys' losses. In the lab, a downed
			// link black-holed the acks of 3 of a route's 4 keys; an
			// even split put a quarter of the losses on the round trip
			// over the healthy reverse path, and the forward links got
			// the blame. Without them (an older agent), the losses
			// start even and then follow the fit, as reverse losses do.
			if o.roundTripsByKey(ix, p, r, rev[revOff[p]:revOff[p+1]]) {
				continue
			}
			frac := 1 / float64(len(targets))
			lost := float64(min(r.Lost, r.Samples))
			first := int32(len(o.trials))
			for _, q := range targets {
				o.addUnion(ix.routeLinks(p), ix.routeLinks(int(q)), float64(r.Samples)*frac, lost*frac)
			}
			if distinct(targets) {
				obsIdx := make([]int32, len(targets))
				for i := range obsIdx {
					obsIdx[i] = first + int32(i)
				}
				o.shares = append(o.shares, share{targets: obsIdx, lost: lost, capped: true})
			}
			continue
		}
		fwd, rv := splitLoss(r)
		o.trials[p] += float64(r.Samples)
		o.losses[p] += fwd
		if len(targets) == 0 {
			continue
		}
		if o.acksByKey(r, fwd, rv, rev[revOff[p]:revOff[p+1]]) {
			continue
		}
		frac := 1 / float64(len(targets))
		for _, q := range targets {
			o.trials[q] += (float64(r.Samples) - fwd) * frac
			o.losses[q] += rv * frac
		}
		if len(targets) > 1 && rv > 0 {
			o.shares = append(o.shares, share{targets: slices.Clone(targets), lost: rv})
		}
	}
	return o
}

// acksByKey charges route r's reverse losses rv (of its lost probes, fwd
// forward) to the reverse route of each key, in proportion to the key's own
// losses (each key's losses split forward and reverse as the route's do),
// over the probes of that key that reached the reflector: the acks that a
// dead reverse path drops land on that path, not spread over every key's.
// Keys without a reverse route in the set are left out. It reports false,
// adding nothing, when the route has no usable per-key counts.
func (o *obs) acksByKey(r Input, fwd, rv float64, rev []int32) bool {
	if !r.byKey(rev) {
		return false
	}
	lost := fwd + rv
	for i, q := range rev {
		n, l := r.keyCounts(i)
		if q < 0 || n <= 0 {
			continue
		}
		kf, kr := 0.0, 0.0
		if lost > 0 {
			kf, kr = l*fwd/lost, l*rv/lost
		}
		o.trials[q] += n - kf
		o.losses[q] += kr
	}
	return true
}

// byKey reports whether r has per-key counts, one per port, as rev (its
// ports' reverse routes) has entries.
func (r *Input) byKey(rev []int32) bool {
	return len(r.SamplesByKey) == len(r.Ports) && len(r.LostByKey) == len(r.Ports) && len(rev) == len(r.Ports)
}

// keyCounts is key i's samples and losses, the losses within [0, samples].
func (r *Input) keyCounts(i int) (n, lost float64) {
	s := r.SamplesByKey[i]
	return float64(s), float64(min(max(r.LostByKey[i], 0), s))
}

// roundTripsByKey adds route p's round trips from its per-key counts: one
// observation per reverse route, over the forward and reverse links, with
// the samples and losses of the keys whose acks take it. Keys without a
// reverse route in the set are left out, as their reverse losses are in
// splitDirections. It reports false, adding nothing, when the route has
// no usable per-key counts.
func (o *obs) roundTripsByKey(ix *index, p int, r Input, rev []int32) bool {
	if !r.byKey(rev) {
		return false
	}
	type trip struct {
		q            int32
		trials, lost float64
	}
	var trips []trip
	for i, q := range rev {
		n, l := r.keyCounts(i)
		if q < 0 || n <= 0 {
			continue
		}
		j := slices.IndexFunc(trips, func(t trip) bool { return t.q == q })
		if j < 0 {
			trips = append(trips, trip{q: q})
			j = len(trips) - 1
		}
		trips[j].trials += n
		trips[j].lost += l
	}
	for _, t := range trips {
		o.addUnion(ix.routeLinks(p), ix.routeLinks(int(t.q)), t.trials, t.lost)
	}
	return len(trips) > 0
}

// resplit divides the reverse losses of every share in proportion to the
// loss the fit now gives each target route (1 − prod), instead of evenly: a
// lost ack is more likely on the reverse path that loses more (one EM step
// over which path each ack took). floor keeps every target possible.
func (o *obs) resplit(prod []float64, floor float64) {
	for i := range o.shares {
		s := &o.shares[i]
		if s.cur == nil {
			s.cur = make([]float64, len(s.targets))
			for j := range s.cur {
				s.cur[j] = s.lost / float64(len(s.targets))
			}
		}
		w := make([]float64, len(s.targets))
		for j, q := range s.targets {
			w[j] = 1 - prod[q] + floor
		}
		var caps []float64
		if s.capped {
			caps = make([]float64, len(s.targets))
			for j, q := range s.targets {
				caps[j] = o.trials[q]
			}
		}
		for j, nw := range splitCapped(s.lost, w, caps) {
			q := s.targets[j]
			o.losses[q] += nw - s.cur[j]
			s.cur[j] = nw
		}
	}
}

// splitCapped divides total in proportion to w (evenly where w is all 0,
// and w may be changed), giving no part more than
// its cap (caps nil: no caps): what a capped part cannot take goes to the
// others, in proportion again.
func splitCapped(total float64, w, caps []float64) []float64 {
	out := make([]float64, len(w))
	open := make([]bool, len(w))
	for j := range open {
		open[j] = true
	}
	for range w {
		var tot float64
		for j, ok := range open {
			if ok {
				tot += w[j]
			}
		}
		if total <= 0 {
			break
		}
		if tot <= 0 { // no weight left: even
			for j, ok := range open {
				if ok {
					w[j] = 1
					tot++
				}
			}
		}
		over := false
		for j, ok := range open {
			if !ok {
				continue
			}
			out[j] = total * w[j] / tot
			if caps != nil && out[j] > caps[j] {
				over = true
			}
		}
		if !over {
			break
		}
		for j, ok := range open {
			if ok && out[j] > caps[j] {
				out[j], open[j] = caps[j], false
				total -= caps[j]
			}
		}
	}
	return out
}

// distinct reports whether routes holds two different routes.
func distinct(routes []int32) bool {
	for _, q := range routes[1:] {
		if q != routes[0] {
			return true
		}
	}
	return false
}
