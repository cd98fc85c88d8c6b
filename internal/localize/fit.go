package localize

import (
	"math"
	"slices"
)

// lossFit holds per-link success rates x_l and, per observation, the
// product of x over its links.
type lossFit struct {
	o  *obs
	by *csr
	x  []float64
	// st is, per observation, what the sweeps read of it, side by side:
	// one cache line per observation visited instead of three.
	st []fitObs
	tw *twins // made on first use
}

// twins groups the links on the same observations.
func (f *lossFit) twins() *twins {
	if f.tw == nil {
		f.tw = newTwins(f.by)
	}
	return f.tw
}

// fitObs is one observation's state in the fit.
type fitObs struct {
	prod float64 // Π x over its links
	w    float64 // trials
	y    float64 // observed success ratio
}

func newLossFit(o *obs, nl int) *lossFit { return newLossFitIn(o, nl, &fitBufs{}) }

// newLossFitIn is newLossFit in b's arrays.
func newLossFitIn(o *obs, nl int, b *fitBufs) *lossFit {
	b.x, b.st = grow(b.x, nl), grow(b.st, len(o.trials))
	f := &lossFit{o: o, x: b.x, st: b.st}
	f.by = byLinkIn(len(o.trials), nl, o.of, func(p int) bool { return o.trials[p] > 0 }, b.byOff, b.byObs)
	b.byOff, b.byObs = f.by.off, f.by.obs
	for l := range f.x {
		f.x[l] = 1
	}
	for p := range f.st {
		f.st[p] = fitObs{prod: 1, w: o.trials[p], y: 1 - ratio(o.losses[p], o.trials[p])}
	}
	return f
}

// start sets x_l = x0[l] for every link in active (the others stay at 1)
// and recomputes the products.
func (f *lossFit) start(x0 []float64, active []int) {
	for _, l := range active {
		f.x[l] = min(max(x0[l], 0), 1)
	}
	for p := range f.st {
		c := 1.0
		for _, l := range f.o.of(p) {
			c *= f.x[l]
		}
		f.st[p].prod = c
	}
}

// resetY recomputes the observed success ratios after the losses moved.
func (f *lossFit) resetY() {
	for p := range f.st {
		f.st[p].y = 1 - ratio(f.o.losses[p], f.o.trials[p])
	}
}

// prods returns the product of every observation.
func (f *lossFit) prods() []float64 {
	out := make([]float64, len(f.st))
	for p := range f.st {
		out[p] = f.st[p].prod
	}
	return out
}

// others is Π x over p's links except l.
func (f *lossFit) others(p int32, l int) float64 {
	if f.x[l] > 1e-6 {
		return f.st[p].prod / f.x[l]
	}
	return f.othersSlow(p, l)
}

// othersSlow is others by multiplication, for x_l near 0.
func (f *lossFit) othersSlow(p int32, l int) float64 {
	c := 1.0
	for _, k := range f.o.of(int(p)) {
		if int(k) != l {
			c *= f.x[k]
		}
	}
	return c
}

// set changes x_l and the products of its observations.
func (f *lossFit) set(l int, nx float64) {
	if xl := f.x[l]; xl > 1e-6 {
		for _, p := range f.by.of(l) {
			f.st[p].prod = f.st[p].prod / xl * nx
		}
	} else {
		for _, p := range f.by.of(l) {
			f.st[p].prod = f.othersSlow(p, l) * nx
		}
	}
	f.x[l] = nx
}

// lossy lists the links on at least one lossy observation: only they can
// leave 1 (a link whose observations are all loss-free has its optimum at
// x >= 1 whatever the others are).
func (f *lossFit) lossy() []int {
	var out []int
	for l := range f.x {
		for _, p := range f.by.of(l) {
			if f.o.losses[p] > 0 {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// run fits x over the links in active so that every observation's success
// ratio y_p ≈ Π_{l∈p} x_l (NetBouncer-style), minimising
//
//	Σ_p trials_p·(y_p − Π_{l∈p} x_l)² + 2·forgive·Σ_l (1 − x_l)
//
// by coordinate descent, until no update moves a link's expected lost-probe
// count by more than a twentieth of a probe. With forgive > 0 the L1 term
// explains a path's losses by the fewest links; with 0 it is the plain
// (unbiased) least-squares fit. It returns the sweeps used.
func (f *lossFit) run(active []int, forgive float64, sweeps int) int {
	n := 0
	for n < sweeps {
		n++
		maxMove := 0.0
		for _, l := range active {
			num, den := f.sums(l)
			if den <= 0 {
				continue
			}
			nx := min(max((num+forgive)/den, 0), 1)
			if nx == f.x[l] {
				continue
			}
			maxMove = max(maxMove, math.Abs(nx-f.x[l])*den)
			f.set(l, nx)
		}
		if maxMove < 0.05 {
			break
		}
	}
	return n
}

// sums are Σ w·c·y and Σ w·c² over l's observations, c the success the
// other links give each.
func (f *lossFit) sums(l int) (num, den float64) {
	ps := f.by.of(l)
	if xl := f.x[l]; xl > 1e-6 {
		for _, p := range ps {
			st := &f.st[p]
			c := st.prod / xl
			num += st.w * c * st.y
			den += st.w * c * c
		}
		return num, den
	}
	for _, p := range ps {
		st := &f.st[p]
		c := f.othersSlow(p, l)
		num += st.w * c * st.y
		den += st.w * c * c
	}
	return num, den
}

// fitLoss selects the lossy links with the penalised fit, then refits the
// selected ones without the penalty: the penalty pulls a selected link's
// estimate down by about forgive ÷ its probes, the refit removes that bias
// (issue 14). Links the penalty set to exactly 1 stay at 1.
func fitLoss(o *obs, nl int, c Config) *lossFit {
	return fitLossFrom(o, nl, c, &fitStart{}, &fitBufs{})
}

// fitLossFrom is fitLoss from s's estimates (a warm start; cold when they
// are nil), in b's arrays. The penalised fit starts each link on a lossy
// observation at s.pen, and every other link at 1, as a cold fit does: a
// link whose losses stopped is not held at its old estimate. The refit
// starts each selected link at s.fin when it was selected last time
// too (s.fin < 1). s gets the estimates of this fit and its sweeps.
func fitLossFrom(o *obs, nl int, c Config, s *fitStart, b *fitBufs) *lossFit {
	f := newLossFitIn(o, nl, b)
	active := f.lossy()
	if s.pen != nil {
		f.start(s.pen, active)
	}
	s.sweeps = f.run(active, c.Forgive, c.Sweeps)
	// Three EM steps: one left a dead link's blame on the other link of
	// its round trips in the lab (TestLocalizeHardAndSlow/dead-link).
	for i := 0; i < 3 && len(o.shares) > 0; i++ {
		o.resplit(f.prods(), c.NegligibleLoss)
		f.resetY()
		s.sweeps += f.run(f.lossy(), c.Forgive, c.Sweeps)
	}
	f.firstTwin()
	var selected []int
	for l, x := range f.x {
		if x < 1 {
			selected = append(selected, l)
		}
	}
	s.pen = append(grow(s.pen, 0), f.x...)
	if s.fin != nil {
		for _, l := range selected {
			if x0 := s.fin[l]; x0 < 1 && x0 != f.x[l] {
				f.set(l, max(x0, 0))
			}
		}
	}
	s.sweeps += f.run(selected, 0, c.Sweeps)
	s.fin = append(grow(s.fin, 0), f.x...)
	return f
}

// firstTwin gives the loss of every group of twin links (links on exactly
// the same observations, which no fit can tell apart) to the first of
// them. The fit alone splits it as its path goes: a cold and a warm fit
// split a silent hop's two links differently, and the verdict (which
// tests each link against what the others explain) changed with the
// split. The observations' products do not change, and the evidence names
// the other twins.
func (f *lossFit) firstTwin() {
	for _, g := range f.twins().group {
		if len(g) < 2 {
			continue
		}
		for i, l := range g {
			if f.x[l] >= 1 {
				continue
			}
			first := slices.IndexFunc(g, func(o int) bool { return slices.Equal(f.by.of(o), f.by.of(l)) })
			if first < i {
				f.set(g[first], f.x[g[first]]*f.x[l])
				f.set(l, 1)
			}
		}
	}
}
