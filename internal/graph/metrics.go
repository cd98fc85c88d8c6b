package graph

import (
	"cmp"
	"math"
	"slices"
)

// ComputeMetrics summarises samples exactly (it sorts them; the graph's own
// route metrics merge flow state instead, see flow.go, and tests hold them
// to this). Samples may come from several keys of one
// route: they are ordered by send time (then sequence) before the jitter is
// computed, so consecutive samples are consecutive in time on the path.
// A lost sample counts as a loss and never enters the RTT figures. Forward and
// reverse losses are counted from Sample.Dir; a loss of unknown direction
// counts only in Lost.
func ComputeMetrics(samples []Sample) Metrics {
	m, _ := computeMetrics(samples)
	return m
}

// computeMetrics is ComputeMetrics that also returns the 10th percentile of
// the RTTs (0 when none), the low percentile the RTT baseline tracks.
func computeMetrics(samples []Sample) (m Metrics, p10 float64) {
	if len(samples) == 0 {
		return m, 0
	}
	// Order by send time then sequence through a small key slice: moving
	// the samples themselves (strings inside) cost most of the time.
	type ord struct {
		t   int64
		seq uint64
		i   int32
	}
	o := make([]ord, len(samples))
	for i, x := range samples {
		o[i] = ord{x.Sent.UnixNano(), x.Seq, int32(i)}
	}
	slices.SortFunc(o, func(a, b ord) int {
		if c := cmp.Compare(a.t, b.t); c != 0 {
			return c
		}
		if c := cmp.Compare(a.seq, b.seq); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i) // stable
	})
	s := make([]*Sample, len(o))
	for j, x := range o {
		s[j] = &samples[x.i]
	}
	m.Samples = len(s)
	m.Source = s[len(s)-1].Source
	m.Since = s[0].Sent
	rtts := make([]float64, 0, len(s))
	var (
		sum    float64
		jitter float64
		prev   float64
		have   bool
	)
	for _, x := range s {
		if x.Lost {
			m.Lost++
			switch x.Dir {
			case LossForward:
				m.LostForward++
			case LossReverse:
				m.LostReverse++
			}
			continue
		}
		v := x.RTT.Seconds()
		rtts = append(rtts, v)
		sum += v
		if have {
			// RFC 3550 §6.4.1: J += (|D| - J)/16, D the difference of
			// consecutive transit times (here round-trip times).
			jitter += (math.Abs(v-prev) - jitter) / 16
		}
		prev, have = v, true
	}
	m.Loss = float64(m.Lost) / float64(m.Samples)
	m.LossForward = float64(m.LostForward) / float64(m.Samples)
	m.LossReverse = float64(m.LostReverse) / float64(m.Samples)
	if len(rtts) == 0 {
		return m, 0
	}
	n := float64(len(rtts))
	m.RTTAvg = sum / n
	var ss float64
	for _, v := range rtts {
		d := v - m.RTTAvg
		ss += d * d
	}
	m.JitterStddev = math.Sqrt(ss / n)
	m.JitterRFC3550 = jitter
	slices.Sort(rtts)
	m.RTTMin = rtts[0]
	m.RTTMax = rtts[len(rtts)-1]
	m.RTTP50 = percentile(rtts, 0.50)
	m.RTTP99 = percentile(rtts, 0.99)
	return m, percentile(rtts, 0.10)
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	idx := int(math.Ceil(p*float64(len(sorted)))) - 1
	idx = max(0, min(idx, len(sorted)-1))
	return sorted[idx]
}
