package localize

import (
	"math"
	"slices"
)

// delayObs are round-trip delay observations: observation p says the links
// links[off[p]:off[p+1]] together add excess[p] seconds to a round trip.
type delayObs struct {
	off    []int32
	links  []int32
	excess []float64
	route  []int32 // the route of each observation (one per key)
}

func (d *delayObs) of(p int) []int32 { return d.links[d.off[p]:d.off[p+1]] }

// delayObservations makes one observation per key with a delay figure,
// over its route's links and those of its reverse route: an RTT excess is
// added somewhere on the round trip. A key whose reverse route is not in
// the set is left out: its excess may come from links nobody can name
// (charging it to the forward links blames them for the reverse path; an
// agent alone knows no reverse routes, so delay is localized where the
// routes of both ends meet, on the aggregator). The median excess over all
// observations is subtracted first: what every route sees (the probing
// hosts' own load) is no link's fault.
func delayObservations(in []Input, ix *index, keyOff, rev []int32, b *fitBufs) *delayObs {
	n := 0
	for _, r := range in {
		if len(r.Excess) == len(r.Ports) {
			n += len(r.Excess)
		}
	}
	d := &delayObs{
		off:    append(slices.Grow(b.dOff[:0], n+1), 0),
		links:  slices.Grow(b.dLinks[:0], n*(len(ix.links)/max(len(in), 1)+4)),
		excess: slices.Grow(b.dExcess[:0], n),
		route:  slices.Grow(b.dRoute[:0], n),
	}
	// mark[l] == p+1: link l is on route p (a slice, not a search of the
	// observation's links, for the reverse route's links).
	mark := grow(b.mark, ix.nLinks())
	clear(mark)
	b.mark = mark
	for p, r := range in {
		if len(r.Excess) != len(r.Ports) || r.hopCount() < 2 {
			continue
		}
		fwd := ix.routeLinks(p)
		for _, l := range fwd {
			mark[l] = int32(p) + 1
		}
		for i, e := range r.Excess {
			if math.IsNaN(e) || math.IsInf(e, 0) || e < 0 {
				continue
			}
			q := rev[int(keyOff[p])+i]
			if q < 0 {
				continue
			}
			d.links = append(d.links, fwd...)
			for _, l := range ix.routeLinks(int(q)) {
				if mark[l] != int32(p)+1 {
					d.links = append(d.links, l)
				}
			}
			d.off = append(d.off, int32(len(d.links)))
			d.excess = append(d.excess, e)
			d.route = append(d.route, int32(p))
		}
	}
	if len(d.excess) > 0 {
		med := median(d.excess)
		for p := range d.excess {
			d.excess[p] = max(d.excess[p]-med, 0)
		}
	}
	return d
}

// median is the upper median of v (v[len/2] once sorted), found by
// selection rather than a full sort.
func median(v []float64) float64 {
	s := slices.Clone(v)
	k := len(s) / 2
	lo, hi := 0, len(s)-1
	for lo < hi {
		// Hoare partition around the middle element: afterwards
		// s[lo..j] <= pivot <= s[j+1..hi].
		pivot := s[lo+(hi-lo)/2]
		i, j := lo-1, hi+1
		for {
			for i++; s[i] < pivot; i++ {
			}
			for j--; s[j] > pivot; j-- {
			}
			if i >= j {
				break
			}
			s[i], s[j] = s[j], s[i]
		}
		if k <= j {
			hi = j
		} else {
			lo = j + 1
		}
	}
	return s[k]
}

// delaySeed fills DelayExcessSeconds: mean excess of the observations
// through the link minus that of the observations not through it.
func delaySeed(d *delayObs, by *csr, rows []Row) {
	var tot float64
	for _, e := range d.excess {
		tot += e
	}
	n := float64(len(d.excess))
	for l := range rows {
		rs := by.of(l)
		if len(rs) == 0 {
			continue
		}
		var through float64
		for _, p := range rs {
			through += d.excess[p]
		}
		k := float64(len(rs))
		rows[l].DelayExcessSeconds = through/k - ratio(tot-through, n-k)
	}
}

// fitDelay fits non-negative per-link delays d_l with excess_p ≈ Σ_{l∈p} d_l
// by coordinate descent on Σ_p (excess_p − Σ d)² + 2·forgive·Σ d, then
// refits the selected links (d > 0) without the penalty so their estimates
// are not shrunk.
func fitDelay(d *delayObs, by *csr, nl int, c Config) []float64 {
	est := make([]float64, nl)
	resid := slices.Clone(d.excess)
	var active []int
	for l := 0; l < nl; l++ {
		if len(by.of(l)) > 0 {
			active = append(active, l)
		}
	}
	sweepDelay(by, est, resid, active, c.DelayForgive, c.Sweeps)
	selected := slices.DeleteFunc(active, func(l int) bool { return est[l] <= 0 })
	sweepDelay(by, est, resid, selected, 0, c.Sweeps)
	return est
}

// sweepDelay runs coordinate descent over active until no link moves by
// more than 100 ns.
func sweepDelay(by *csr, est, resid []float64, active []int, forgive float64, sweeps int) {
	for s := 0; s < sweeps; s++ {
		moved := 0.0
		for _, l := range active {
			rs := by.of(l)
			var sum float64
			for _, p := range rs {
				sum += resid[p] + est[l]
			}
			nd := max((sum-forgive)/float64(len(rs)), 0)
			if nd == est[l] {
				continue
			}
			for _, p := range rs {
				resid[p] -= nd - est[l]
			}
			moved = max(moved, math.Abs(nd-est[l]))
			est[l] = nd
		}
		if moved < 1e-7 {
			return
		}
	}
}

// delayVerdicts sets EstimatedDelaySeconds and turns an OK link slow when
// its estimate reaches SlowMinSeconds over at least SlowMinRoutes distinct
// routes (a link only one route crosses, like a silent hop's placeholder,
// is that route's excess, not evidence about a link).
func delayVerdicts(d *delayObs, est []float64, by *csr, c Config, rows []Row) {
	for l := range rows {
		rows[l].EstimatedDelaySeconds = est[l]
		if rows[l].Verdict == VerdictOK && est[l] >= c.SlowMinSeconds && distinctRoutes(d, by.of(l), c.SlowMinRoutes) >= c.SlowMinRoutes {
			rows[l].Verdict = VerdictSlow
		}
	}
}

// distinctRoutes counts the routes of the observations ps, up to enough.
func distinctRoutes(d *delayObs, ps []int32, enough int) int {
	var seen []int32
	for _, p := range ps {
		if r := d.route[p]; !slices.Contains(seen, r) {
			if seen = append(seen, r); len(seen) >= enough {
				break
			}
		}
	}
	return len(seen)
}

// localizeDelay is the delay half of Run, in b's arrays.
func localizeDelay(in []Input, ix *index, keyOff, rev []int32, c Config, rows []Row, b *fitBufs) {
	d := delayObservations(in, ix, keyOff, rev, b)
	b.dOff, b.dLinks, b.dExcess, b.dRoute = d.off, d.links, d.excess, d.route
	if len(d.excess) == 0 {
		return
	}
	by := byLinkIn(len(d.excess), len(rows), d.of, func(int) bool { return true }, b.dByOff, b.dByObs)
	b.dByOff, b.dByObs = by.off, by.obs
	delaySeed(d, by, rows)
	delayVerdicts(d, fitDelay(d, by, len(rows), c), by, c, rows)
}
