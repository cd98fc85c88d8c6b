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
	// (keys merged on one forward route whose acks took different paths):
	// split evenly at first, then by the fit (resplit).
	shares []share
}

// share is one route's reverse losses to be divided over its targets.
type share struct {
	targets []int32
	lost    float64
	cur     []float64 // what each target has now; nil: even
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
// pair, found by binary search: one sort of the routes, not a map of
// slices (at 275 k routes the map and its 10⁵ small slices cost 3× more).
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
	keyOff = make([]int32, len(in)+1)
	rev = make([]int32, 0, nports)
	for p := range in {
		r := &in[p]
		keyOff[p] = int32(len(rev))
		var back []int32
		if r.hopCount() >= 2 {
			s, d := ix.ends(p)
			want := pair(d, s)
			lo, _ := slices.BinarySearchFunc(byPair, want, func(e ended, k uint64) int { return cmp.Compare(e.pair, k) })
			hi := lo
			for hi < len(byPair) && byPair[hi].pair == want {
				hi++
			}
			back = routes[lo:hi]
		}
		for _, port := range r.Ports {
			rev = append(rev, withPort(in, back, port))
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

// found drops the -1s of a reverses list.
func found(rev []int32) []int32 {
	if !slices.Contains(rev, -1) {
		return rev
	}
	return slices.DeleteFunc(slices.Clone(rev), func(q int32) bool { return q < 0 })
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
	o := &obs{
		off:    slices.Clone(ix.linkOff),
		links:  slices.Clone(ix.links),
		trials: make([]float64, len(in)),
		losses: make([]float64, len(in)),
	}
	for p, r := range in {
		if r.Samples <= 0 || r.hopCount() < 2 {
			continue
		}
		targets := found(rev[revOff[p]:revOff[p+1]])
		if r.LostForward <= 0 && r.LostReverse <= 0 && r.Lost > 0 && len(targets) > 0 {
			frac := 1 / float64(len(targets))
			for _, q := range targets {
				o.addUnion(ix.routeLinks(p), ix.routeLinks(int(q)), float64(r.Samples)*frac, float64(min(r.Lost, r.Samples))*frac)
			}
			continue
		}
		fwd, rv := splitLoss(r)
		o.trials[p] += float64(r.Samples)
		o.losses[p] += fwd
		if len(targets) == 0 {
			continue
		}
		frac := 1 / float64(len(targets))
		for _, q := range targets {
			o.trials[q] += (float64(r.Samples) - fwd) * frac
			o.losses[q] += rv * frac
		}
		if len(targets) > 1 && rv > 0 {
			o.shares = append(o.shares, share{targets: targets, lost: rv})
		}
	}
	return o
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
		var tot float64
		for _, q := range s.targets {
			tot += 1 - prod[q] + floor
		}
		for j, q := range s.targets {
			nw := s.lost * (1 - prod[q] + floor) / tot
			o.losses[q] += nw - s.cur[j]
			s.cur[j] = nw
		}
	}
}
