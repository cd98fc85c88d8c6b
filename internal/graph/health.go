package graph

import (
	"cmp"
	"fmt"
	"math"
	"slices"
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
	// Default 0.002 (0.2%).
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
		FaultyMinLoss:    0.002,
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
	return localize(s.Routes, hc.withDefaults()), nil
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

// observation is what the probes say about one path (a route's hop list):
// trials probes crossed it (forward probes of the route, plus acks of the
// routes whose reverse it is), losses of them were lost on it.
type observation struct {
	links  []int
	trials float64
	losses float64
}

// localize computes one LinkHealth per link over routes.
//
// Direction: a route's forward losses and its losses of unknown direction
// are charged to its own links, over all its samples. Its reverse losses are
// charged to the links of the route of key.Reverse() (the path the acks took),
// over the probes that reached the reflector. When no route in the set has
// the reverse key (an agent alone knows only its own routes), the reverse
// losses and the ack trials are left out rather than guessed. A route with
// several keys whose reverses are different routes splits them evenly by key
// (metrics are merged per route, not kept per key).
func localize(routes []Route, hc HealthConfig) []LinkHealth {
	linkIdx := make(map[LinkID]int)
	var linkIDs []LinkID
	byKey := make(map[RouteKey]int, len(routes))
	for i, r := range routes {
		for _, k := range r.Keys {
			if _, ok := byKey[k]; !ok {
				byKey[k] = i
			}
		}
	}
	obs := make([]observation, len(routes))
	for i, r := range routes {
		seen := make(map[int]bool, len(r.Hops))
		for j := 1; j < len(r.Hops); j++ {
			id := LinkID{Src: r.Hops[j-1], Dst: r.Hops[j]}
			li, ok := linkIdx[id]
			if !ok {
				li = len(linkIDs)
				linkIdx[id] = li
				linkIDs = append(linkIDs, id)
			}
			if !seen[li] {
				seen[li] = true
				obs[i].links = append(obs[i].links, li)
			}
		}
	}
	for i, r := range routes {
		m := r.Metrics
		if m.Samples <= 0 {
			continue
		}
		lost := min(max(m.Lost, 0), m.Samples)
		rev := min(max(m.LostReverse, 0), lost)
		fwd := lost - rev // forward plus unknown direction
		obs[i].trials += float64(m.Samples)
		obs[i].losses += float64(fwd)
		if rev == 0 && m.Samples-fwd == 0 {
			continue
		}
		var targets []int
		for _, k := range r.Keys {
			if q, ok := byKey[k.Reverse()]; ok {
				targets = append(targets, q)
			}
		}
		if len(targets) == 0 {
			continue
		}
		frac := 1 / float64(len(targets))
		for _, q := range targets {
			obs[q].trials += float64(m.Samples-fwd) * frac
			obs[q].losses += float64(rev) * frac
		}
	}

	nl := len(linkIDs)
	rows := make([]LinkHealth, nl)
	// Seed score.
	var totT, totL float64
	nObs := 0
	tThrough := make([]float64, nl)
	lThrough := make([]float64, nl)
	rThrough := make([]int, nl)
	for _, o := range obs {
		if o.trials <= 0 {
			continue
		}
		nObs++
		totT += o.trials
		totL += o.losses
		for _, l := range o.links {
			tThrough[l] += o.trials
			lThrough[l] += o.losses
			rThrough[l]++
		}
	}
	for l, id := range linkIDs {
		h := &rows[l]
		h.Src, h.Dst = id.Src, id.Dst
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

	estimate(obs, nl, hc, rows)

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
func estimate(obs []observation, nl int, hc HealthConfig, rows []LinkHealth) {
	onLink := make([][]int, nl)
	for p, o := range obs {
		if o.trials <= 0 {
			continue
		}
		for _, l := range o.links {
			onLink[l] = append(onLink[l], p)
		}
	}
	x := make([]float64, nl)
	for l := range x {
		x[l] = 1
	}
	prod := make([]float64, len(obs))
	y := make([]float64, len(obs))
	for p, o := range obs {
		prod[p] = 1
		if o.trials > 0 {
			y[p] = 1 - o.losses/o.trials
		}
	}
	// others is Π x over p's links except l.
	others := func(p, l int) float64 {
		if x[l] > 1e-6 {
			return prod[p] / x[l]
		}
		c := 1.0
		for _, k := range obs[p].links {
			if k != l {
				c *= x[k]
			}
		}
		return c
	}
	// Only links on a lossy path can move away from 1; the others stay there
	// (their optimum is x=1 whenever every path they carry is loss-free and
	// the other links are at 1, and the penalty pins them otherwise).
	var active []int
	for l := range onLink {
		for _, p := range onLink[l] {
			if obs[p].losses > 0 {
				active = append(active, l)
				break
			}
		}
	}
	for sweep := 0; sweep < hc.Sweeps; sweep++ {
		maxDelta := 0.0
		for _, l := range active {
			var num, den float64
			for _, p := range onLink[l] {
				c := others(p, l)
				w := obs[p].trials
				num += w * c * y[p]
				den += w * c * c
			}
			if den <= 0 {
				continue
			}
			nx := (num + hc.Forgive) / den
			nx = min(max(nx, 0), 1)
			if d := math.Abs(nx - x[l]); d > maxDelta {
				maxDelta = d
			}
			if nx == x[l] {
				continue
			}
			for _, p := range onLink[l] {
				if x[l] > 1e-6 {
					prod[p] = prod[p] / x[l] * nx
				} else {
					prod[p] = others(p, l) * nx
				}
			}
			x[l] = nx
		}
		if maxDelta < 1e-7 {
			break
		}
	}
	for l := range rows {
		h := &rows[l]
		h.EstimatedLoss = 1 - x[l]
		var observed, expected, trials float64
		for _, p := range onLink[l] {
			c := others(p, l)
			observed += obs[p].losses
			expected += obs[p].trials * (1 - c)
			trials += obs[p].trials
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
				100*h.EstimatedLoss, observed, trials, len(onLink[l]), expected)
		} else {
			h.Evidence = "no samples"
		}
	}
}
