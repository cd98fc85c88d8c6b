package graph

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
)

// HealthConfig tunes the explain-away estimator. The zero value of a field
// means its default.
type HealthConfig struct {
	// Forgive is the L1 penalty of the fit, in lost probes: a link is given
	// loss only for the lost probes it explains beyond this many. It pushes
	// links that explain little toward 0 loss, so the loss a faulty link
	// causes is not smeared over its neighbours. Default 2.
	Forgive float64
	// Sweeps bounds the coordinate-descent passes. Default 200.
	Sweeps int
	// FaultyMinLoss is the lowest estimated loss ratio a faulty link has.
	// Default 0.003 (0.3%).
	FaultyMinLoss float64
	// FaultyMinExcess is how many lost probes through the link, beyond what
	// the other links explain, a faulty link needs. Default 6.
	FaultyMinExcess float64
	// FaultyZ is how many standard deviations (Poisson, of the losses the
	// other links explain) the excess must exceed. Default 5.
	FaultyZ float64
	// SuspectMinLoss, SuspectMinExcess and SuspectZ are the weaker bars for
	// a suspect verdict. Defaults 0.001, 3 and 3.
	SuspectMinLoss   float64
	SuspectMinExcess float64
	SuspectZ         float64
}

// DefaultHealthConfig returns the estimator defaults.
func DefaultHealthConfig() HealthConfig {
	return HealthConfig{
		Forgive:          2,
		Sweeps:           200,
		FaultyMinLoss:    0.003,
		FaultyMinExcess:  6,
		FaultyZ:          5,
		SuspectMinLoss:   0.001,
		SuspectMinExcess: 3,
		SuspectZ:         3,
	}
}

func (c HealthConfig) withDefaults() HealthConfig {
	d := DefaultHealthConfig()
	if c.Forgive <= 0 {
		c.Forgive = d.Forgive
	}
	if c.Sweeps <= 0 {
		c.Sweeps = d.Sweeps
	}
	if c.FaultyMinLoss <= 0 {
		c.FaultyMinLoss = d.FaultyMinLoss
	}
	if c.FaultyMinExcess <= 0 {
		c.FaultyMinExcess = d.FaultyMinExcess
	}
	if c.FaultyZ <= 0 {
		c.FaultyZ = d.FaultyZ
	}
	if c.SuspectMinLoss <= 0 {
		c.SuspectMinLoss = d.SuspectMinLoss
	}
	if c.SuspectMinExcess <= 0 {
		c.SuspectMinExcess = d.SuspectMinExcess
	}
	if c.SuspectZ <= 0 {
		c.SuspectZ = d.SuspectZ
	}
	return c
}

// HealthOf ranks the links of a saved snapshot (the /v1/graph or aggregator
// document; `dnms health -f`) with the default HealthConfig, after checking
// that the snapshot is consistent.
func HealthOf(s Snapshot) ([]LinkHealth, error) {
	return HealthOfConfig(s, DefaultHealthConfig())
}

// HealthOfConfig is HealthOf with explicit estimator settings.
func HealthOfConfig(s Snapshot, hc HealthConfig) ([]LinkHealth, error) {
	if err := Validate(s); err != nil {
		return nil, err
	}
	return localize(inputsOf(s.Routes), hc.withDefaults()), nil
}

// Validate checks a snapshot: unique node IDs, links between known nodes,
// routes of at least two hops over known nodes and listed links, and sane
// counts (non-negative, lost <= samples, forward+reverse <= lost).
func Validate(s Snapshot) error {
	nodes := make(map[string]bool, len(s.Nodes))
	for i, n := range s.Nodes {
		if n.ID == "" {
			return fmt.Errorf("node %d: empty id", i)
		}
		if nodes[n.ID] {
			return fmt.Errorf("node %q listed twice", n.ID)
		}
		nodes[n.ID] = true
	}
	links := make(map[LinkID]bool, len(s.Links))
	for _, l := range s.Links {
		if !nodes[l.Src] {
			return fmt.Errorf("edge %s→%s: unknown source node %q", l.Src, l.Dst, l.Src)
		}
		if !nodes[l.Dst] {
			return fmt.Errorf("edge %s→%s: unknown destination node %q", l.Src, l.Dst, l.Dst)
		}
		if l.Routes < 0 {
			return fmt.Errorf("edge %s→%s: negative route count %d", l.Src, l.Dst, l.Routes)
		}
		links[l.LinkID] = true
	}
	for i, r := range s.Routes {
		name := fmt.Sprintf("route %d (id %q, origin %q)", i, r.ID, r.Origin)
		if r.ID == "" {
			return fmt.Errorf("%s: empty id", name)
		}
		if len(r.Hops) < 2 {
			return fmt.Errorf("%s: %d hops, need at least source and destination", name, len(r.Hops))
		}
		for j, h := range r.Hops {
			if !nodes[h] {
				return fmt.Errorf("%s: hop %d %q is not a known node", name, j, h)
			}
			if j > 0 && !links[LinkID{Src: r.Hops[j-1], Dst: h}] {
				return fmt.Errorf("%s: hops %d→%d (%s→%s) are not a known edge", name, j-1, j, r.Hops[j-1], h)
			}
		}
		m := r.Metrics
		switch {
		case m.Samples < 0 || m.Lost < 0 || m.LostForward < 0 || m.LostReverse < 0:
			return fmt.Errorf("%s: negative count (samples %d, lost %d, forward %d, reverse %d)",
				name, m.Samples, m.Lost, m.LostForward, m.LostReverse)
		case m.Lost > m.Samples:
			return fmt.Errorf("%s: lost %d > samples %d", name, m.Lost, m.Samples)
		case m.LostForward+m.LostReverse > m.Lost:
			return fmt.Errorf("%s: lost forward %d + reverse %d > lost %d", name, m.LostForward, m.LostReverse, m.Lost)
		}
		for _, f := range []float64{m.Loss, m.LossForward, m.LossReverse, m.RTTMin, m.RTTAvg, m.RTTP50, m.RTTP99, m.RTTMax, m.JitterRFC3550, m.JitterStddev} {
			if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return fmt.Errorf("%s: metric value %v out of range", name, f)
			}
		}
	}
	return nil
}

// healthInput is one route as the localization sees it. hops and keys may
// alias the caller's slices: localize only reads them.
type healthInput struct {
	hops []string
	keys []RouteKey
	m    counts
}

// counts are the Metrics fields the localization reads.
type counts struct {
	Samples, Lost, LostForward, LostReverse int
}

func countsOf(m Metrics) counts {
	return counts{Samples: m.Samples, Lost: m.Lost, LostForward: m.LostForward, LostReverse: m.LostReverse}
}

func inputsOf(routes []Route) []healthInput {
	in := make([]healthInput, len(routes))
	for i, r := range routes {
		in[i] = healthInput{hops: r.Hops, keys: r.Keys, m: countsOf(r.Metrics)}
	}
	return in
}

// paths is what the probes say, in flat arrays. Observation p crosses
// links[off[p]:off[p+1]]; trials probes crossed it and losses of them were
// lost on it. The first observations are the routes, in input order (a
// route's forward probes plus the acks of the routes whose reverse it is);
// round trips of routes whose losses have no known direction follow.
type paths struct {
	off    []int32
	links  []int32
	trials []float64
	losses []float64
}

func (ps *paths) of(p int) []int32 { return ps.links[ps.off[p]:ps.off[p+1]] }

// addRoundTrip adds an observation over the links of route p and of route q
// (its reverse) together.
func (ps *paths) addRoundTrip(p, q int, trials, losses float64) {
	start := len(ps.links)
	ps.links = append(ps.links, ps.of(p)...)
	for _, l := range ps.of(q) {
		if !slices.Contains(ps.links[start:], l) {
			ps.links = append(ps.links, l)
		}
	}
	ps.off = append(ps.off, int32(len(ps.links)))
	ps.trials = append(ps.trials, trials)
	ps.losses = append(ps.losses, losses)
}

// splitLoss divides a route's lost probes into forward and reverse losses.
// Losses of unknown direction are split in the proportion of the route's
// known-direction losses (a lost ack is as likely among them as among the
// known ones); when no direction is known, or the reverse route is not in
// the set, they count as forward. Without the reverse route the reverse
// losses are dropped (rev is still returned but unused).
func splitLoss(m counts, haveReverse bool) (fwd, rev float64) {
	lost := min(max(m.Lost, 0), m.Samples)
	kf := min(max(m.LostForward, 0), lost)
	kr := min(max(m.LostReverse, 0), lost-kf)
	unknown := float64(lost - kf - kr)
	fwd, rev = float64(kf), float64(kr)
	if haveReverse && kf+kr > 0 {
		share := fwd / (fwd + rev)
		return fwd + unknown*share, rev + unknown*(1-share)
	}
	return fwd + unknown, rev
}

// localize computes one LinkHealth per link over the routes.
//
// Direction: a route's forward losses (and its share of the losses of
// unknown direction, see splitLoss) are charged to its own links, over all
// its samples. Its reverse losses are
// charged to the links of the route of key.Reverse() (the path the acks
// took), over the probes that reached the reflector. When no route in the
// set has the reverse key (an agent alone knows only its own routes), the
// reverse losses and the ack trials are left out rather than guessed: they
// say nothing about the forward links. A route whose keys' reverses are
// different routes splits them evenly by key (metrics are merged per route,
// not kept per key).
//
// The result does not depend on the order of in: links are indexed in
// (src, dst) order.
func localize(in []healthInput, hc HealthConfig) []LinkHealth {
	// Intern node IDs.
	nodeIdx := make(map[string]int32)
	var names []string
	flat := make([]int32, 0, 5*len(in))
	pathStart := make([]int32, len(in)+1)
	for i, r := range in {
		pathStart[i] = int32(len(flat))
		for _, h := range r.hops {
			id, ok := nodeIdx[h]
			if !ok {
				id = int32(len(names))
				nodeIdx[h] = id
				names = append(names, h)
			}
			flat = append(flat, id)
		}
	}
	pathStart[len(in)] = int32(len(flat))
	// Renumber nodes in name order so link order is (src, dst) order.
	order := make([]int32, len(names))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return cmp.Compare(names[a], names[b]) })
	rank := make([]int32, len(names))
	for r, id := range order {
		rank[id] = int32(r)
	}
	for i, id := range flat {
		flat[i] = rank[id]
	}
	sortedNames := make([]string, len(names))
	for id, r := range rank {
		sortedNames[r] = names[id]
	}
	// Links of every route: numbered in first-seen order, then renumbered in
	// (src, dst) order.
	var linkKeys []uint64
	firstSeen := make(map[uint64]int32)
	ps := paths{
		off:    make([]int32, len(in)+1),
		trials: make([]float64, len(in)),
		losses: make([]float64, len(in)),
		links:  make([]int32, 0, len(flat)),
	}
	for p, r := range in {
		pos := pathStart[p]
		ps.off[p] = int32(len(ps.links))
		start := len(ps.links)
		for j := int32(1); j < int32(len(r.hops)); j++ {
			k := uint64(flat[pos+j-1])<<32 | uint64(flat[pos+j])
			id, ok := firstSeen[k]
			if !ok {
				id = int32(len(linkKeys))
				firstSeen[k] = id
				linkKeys = append(linkKeys, k)
			}
			if slices.Contains(ps.links[start:], id) {
				continue // a looping trace crosses a link once for our purpose
			}
			ps.links = append(ps.links, id)
		}
	}
	ps.off[len(in)] = int32(len(ps.links))
	perm := make([]int32, len(linkKeys))
	for i := range perm {
		perm[i] = int32(i)
	}
	slices.SortFunc(perm, func(a, b int32) int { return cmp.Compare(linkKeys[a], linkKeys[b]) })
	newID := make([]int32, len(linkKeys))
	for i, old := range perm {
		newID[old] = int32(i)
	}
	for i, id := range ps.links {
		ps.links[i] = newID[id]
	}
	slices.Sort(linkKeys)

	// Observations per route, with reverse losses moved to reverse routes.
	// Keys are matched by (source node, destination node, port), the nodes
	// being the route's endpoints (a key's Src and Dst are its route's).
	nkeys, nRoundTrip := 0, 0
	for _, r := range in {
		nkeys += len(r.keys)
		if r.m.LostForward <= 0 && r.m.LostReverse <= 0 && r.m.Lost > 0 {
			nRoundTrip += len(r.keys)
		}
	}
	ps.links = slices.Grow(ps.links, nRoundTrip*8)
	ends := func(p int) (uint64, uint64) {
		return uint64(flat[pathStart[p]]), uint64(flat[pathStart[p+1]-1])
	}
	byKey := make(map[uint64]int32, nkeys)
	for i, r := range in {
		if len(r.hops) < 2 {
			continue
		}
		src, dst := ends(i)
		for _, k := range r.keys {
			kk := src<<40 | dst<<16 | uint64(k.SrcPort)
			if _, ok := byKey[kk]; !ok {
				byKey[kk] = int32(i)
			}
		}
	}
	var targets []int32
	for i, r := range in {
		m := r.m
		if m.Samples <= 0 || len(r.hops) < 2 {
			continue
		}
		src, dst := ends(i)
		targets = targets[:0]
		for _, k := range r.keys {
			if q, ok := byKey[dst<<40|src<<16|uint64(k.SrcPort)]; ok {
				targets = append(targets, q)
			}
		}
		if m.LostForward <= 0 && m.LostReverse <= 0 && m.Lost > 0 && len(targets) > 0 {
			// No direction known at all (no reflector counters): the
			// round trip is what was observed, over the forward and the
			// reverse links together.
			frac := 1 / float64(len(targets))
			for _, q := range targets {
				ps.addRoundTrip(i, int(q), float64(m.Samples)*frac, float64(min(m.Lost, m.Samples))*frac)
			}
			continue
		}
		fwd, rev := splitLoss(m, len(targets) > 0)
		ps.trials[i] += float64(m.Samples)
		ps.losses[i] += fwd
		if len(targets) == 0 {
			continue
		}
		frac := 1 / float64(len(targets))
		for _, q := range targets {
			ps.trials[q] += (float64(m.Samples) - fwd) * frac
			ps.losses[q] += rev * frac
		}
	}

	nl := len(linkKeys)
	rows := make([]LinkHealth, nl)
	// Seed score.
	var totT, totL float64
	nObs := 0
	tThrough := make([]float64, nl)
	lThrough := make([]float64, nl)
	rThrough := make([]int, nl)
	for p := range ps.trials {
		t := ps.trials[p]
		if t <= 0 {
			continue
		}
		nObs++
		totT += t
		totL += ps.losses[p]
		for _, l := range ps.of(p) {
			tThrough[l] += t
			lThrough[l] += ps.losses[p]
			rThrough[l]++
		}
	}
	for l, k := range linkKeys {
		h := &rows[l]
		h.Src, h.Dst = sortedNames[k>>32], sortedNames[k&0xffffffff]
		h.RoutesThrough = rThrough[l]
		h.SamplesThrough = int(math.Round(tThrough[l]))
		h.RoutesNotThrough = nObs - rThrough[l]
		h.SamplesNotThrough = int(math.Round(totT - tThrough[l]))
		if tThrough[l] > 0 {
			h.AvgLossThrough = lThrough[l] / tThrough[l]
		}
		if nt := totT - tThrough[l]; nt > 0 {
			h.AvgLossNotThrough = (totL - lThrough[l]) / nt
		}
		h.Suspicion = h.AvgLossThrough - h.AvgLossNotThrough
	}

	estimate(&ps, nl, hc, rows)

	slices.SortStableFunc(rows, func(a, b LinkHealth) int {
		if c := cmp.Compare(b.Suspicion, a.Suspicion); c != 0 {
			return c
		}
		if c := cmp.Compare(b.EstimatedLoss, a.EstimatedLoss); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Src, b.Src); c != 0 {
			return c
		}
		return cmp.Compare(a.Dst, b.Dst)
	})
	return rows
}

// estimate fits per-link success rates x_l so that every path's success
// ratio y_p ≈ Π x_l over its links (NetBouncer-style), minimising
//
//	Σ_p trials_p·(y_p − Π_{l∈p} x_l)² + 2·Forgive·Σ_l (1 − x_l)
//
// by coordinate descent. The L1 term makes the fit explain a path's losses by
// the fewest links: a healthy link that shares paths with a faulty one gets
// ~0 loss because the faulty one already explains them. Each link's verdict
// then compares the losses seen on its paths with the losses the other links
// explain (Poisson noise bound).
func estimate(ps *paths, nl int, hc HealthConfig, rows []LinkHealth) int {
	np := len(ps.trials)
	// CSR of routes per link.
	cnt := make([]int32, nl+1)
	for p := 0; p < np; p++ {
		if ps.trials[p] <= 0 {
			continue
		}
		for _, l := range ps.of(p) {
			cnt[l+1]++
		}
	}
	for l := 0; l < nl; l++ {
		cnt[l+1] += cnt[l]
	}
	onLink := make([]int32, cnt[nl])
	fill := slices.Clone(cnt[:nl])
	for p := 0; p < np; p++ {
		if ps.trials[p] <= 0 {
			continue
		}
		for _, l := range ps.of(p) {
			onLink[fill[l]] = int32(p)
			fill[l]++
		}
	}
	routesOf := func(l int) []int32 { return onLink[cnt[l]:cnt[l+1]] }

	x := make([]float64, nl)
	for l := range x {
		x[l] = 1
	}
	prod := make([]float64, np)
	y := make([]float64, np)
	for p := range prod {
		prod[p] = 1
		if t := ps.trials[p]; t > 0 {
			y[p] = 1 - ps.losses[p]/t
		}
	}
	// others is Π x over p's links except l.
	others := func(p int32, l int) float64 {
		if x[l] > 1e-6 {
			return prod[p] / x[l]
		}
		c := 1.0
		for _, k := range ps.of(int(p)) {
			if int(k) != l {
				c *= x[k]
			}
		}
		return c
	}
	// Only links on a lossy path can leave 1: a link whose paths are all
	// loss-free has its optimum at x >= 1 whatever the others are.
	var active []int
	for l := 0; l < nl; l++ {
		for _, p := range routesOf(l) {
			if ps.losses[p] > 0 {
				active = append(active, l)
				break
			}
		}
	}
	sweeps := 0
	for sweeps < hc.Sweeps {
		sweeps++
		// Converged when no update moves a link's expected lost-probe count
		// by more than a twentieth of a probe.
		maxMove := 0.0
		for _, l := range active {
			var num, den float64
			for _, p := range routesOf(l) {
				c := others(p, l)
				w := ps.trials[p]
				num += w * c * y[p]
				den += w * c * c
			}
			if den <= 0 {
				continue
			}
			nx := min(max((num+hc.Forgive)/den, 0), 1)
			if nx == x[l] {
				continue
			}
			if mv := math.Abs(nx-x[l]) * den; mv > maxMove {
				maxMove = mv
			}
			for _, p := range routesOf(l) {
				if x[l] > 1e-6 {
					prod[p] = prod[p] / x[l] * nx
				} else {
					prod[p] = others(p, l) * nx
				}
			}
			x[l] = nx
		}
		if maxMove < 0.05 {
			break
		}
	}
	// Links that carry exactly the same observations cannot be told apart
	// (e.g. a host's uplink and its leaf's only uplink it uses): the fit
	// gives the loss to one of them, the evidence names the others.
	twins := make(map[uint64][]int)
	for l := 0; l < nl; l++ {
		rs := routesOf(l)
		if len(rs) == 0 {
			continue
		}
		h := fnv.New64a()
		var b [4]byte
		for _, p := range rs {
			binary.LittleEndian.PutUint32(b[:], uint32(p))
			h.Write(b[:])
		}
		k := h.Sum64()
		twins[k] = append(twins[k], l)
	}
	twinKey := func(l int) []int {
		rs := routesOf(l)
		h := fnv.New64a()
		var b [4]byte
		for _, p := range rs {
			binary.LittleEndian.PutUint32(b[:], uint32(p))
			h.Write(b[:])
		}
		var out []int
		for _, o := range twins[h.Sum64()] {
			if o != l && slices.Equal(routesOf(o), rs) {
				out = append(out, o)
			}
		}
		return out
	}
	for l := range rows {
		h := &rows[l]
		h.EstimatedLoss = 1 - x[l]
		var observed, expected, trials float64
		rs := routesOf(l)
		for _, p := range rs {
			c := others(p, l)
			observed += ps.losses[p]
			expected += ps.trials[p] * (1 - c)
			trials += ps.trials[p]
		}
		excess := observed - expected
		sigma := math.Sqrt(expected + 1)
		h.Verdict = VerdictOK
		switch {
		case h.EstimatedLoss >= hc.FaultyMinLoss && excess >= hc.FaultyMinExcess && excess >= hc.FaultyZ*sigma:
			h.Verdict = VerdictFaulty
		case h.EstimatedLoss >= hc.SuspectMinLoss && excess >= hc.SuspectMinExcess && excess >= hc.SuspectZ*sigma:
			h.Verdict = VerdictSuspect
		}
		if trials > 0 {
			h.Evidence = fmt.Sprintf("estimated %.2f%% loss: %.0f of %.0f probes lost on %d routes through it, %.1f explained by other links",
				100*h.EstimatedLoss, observed, trials, len(rs), expected)
		} else {
			h.Evidence = "no samples"
		}
		if h.Verdict != VerdictOK {
			if tw := twinKey(l); len(tw) > 0 {
				names := make([]string, 0, min(len(tw), 3))
				for _, o := range tw[:min(len(tw), 3)] {
					names = append(names, rows[o].Src+"→"+rows[o].Dst)
				}
				h.Evidence += "; indistinguishable from " + strings.Join(names, ", ") + " (same routes)"
			}
		}
	}
	return sweeps
}
