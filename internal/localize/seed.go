package localize

import "math"

// seedScore fills the seed fields of rows (one per link): the
// sample-weighted average loss of the observations through the link minus
// that of the observations not through it, and the evidence counts.
func seedScore(o *obs, ix *index, rows []Row) {
	nl := len(rows)
	var totT, totL float64
	nObs := 0
	tThrough := make([]float64, nl)
	lThrough := make([]float64, nl)
	rThrough := make([]int, nl)
	for p, t := range o.trials {
		if t <= 0 {
			continue
		}
		nObs++
		totT += t
		totL += o.losses[p]
		for _, l := range o.of(p) {
			tThrough[l] += t
			lThrough[l] += o.losses[p]
			rThrough[l]++
		}
	}
	for l := range rows {
		h := &rows[l]
		h.Src, h.Dst = ix.linkName(l)
		h.RoutesThrough = rThrough[l]
		h.SamplesThrough = int(math.Round(tThrough[l]))
		h.RoutesNotThrough = nObs - rThrough[l]
		h.SamplesNotThrough = int(math.Round(totT - tThrough[l]))
		h.AvgLossThrough = ratio(lThrough[l], tThrough[l])
		h.AvgLossNotThrough = ratio(totL-lThrough[l], totT-tThrough[l])
		h.Suspicion = h.AvgLossThrough - h.AvgLossNotThrough
	}
}

// ratio is a/b, 0 when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}
