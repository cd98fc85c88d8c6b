package localize

import "slices"

// csr lists, for every link, the observations that cross it.
type csr struct {
	off []int32
	obs []int32
}

func (c *csr) of(l int) []int32 { return c.obs[c.off[l]:c.off[l+1]] }

// byLink inverts observations → links into links → observations, keeping
// only observations for which keep(p) holds.
func byLink(nObs, nl int, linksOf func(p int) []int32, keep func(p int) bool) *csr {
	return byLinkIn(nObs, nl, linksOf, keep, nil, nil)
}

// byLinkIn is byLink in the arrays off and obs when they are large enough.
func byLinkIn(nObs, nl int, linksOf func(p int) []int32, keep func(p int) bool, off, obs []int32) *csr {
	c := &csr{off: grow(off, nl+1)}
	clear(c.off)
	for p := 0; p < nObs; p++ {
		if keep(p) {
			for _, l := range linksOf(p) {
				c.off[l+1]++
			}
		}
	}
	for l := 0; l < nl; l++ {
		c.off[l+1] += c.off[l]
	}
	c.obs = grow(obs, int(c.off[nl]))
	fill := slices.Clone(c.off[:nl])
	for p := 0; p < nObs; p++ {
		if keep(p) {
			for _, l := range linksOf(p) {
				c.obs[fill[l]] = int32(p)
				fill[l]++
			}
		}
	}
	return c
}
