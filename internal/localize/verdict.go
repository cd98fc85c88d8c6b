package localize

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// lossTest is one link's evidence: observed lost probes on its
// observations, the losses the other links explain, the probes, and the
// p-value of "this link loses at most NegligibleLoss".
type lossTest struct {
	observed, explained, trials float64
	p                           float64
}

// testLink runs the one-sided likelihood-ratio test for link l: under the
// null hypothesis the link loses at most q0. Each observation p of the link
// is binomial: its trials succeed with probability c_p·x, c_p the success
// the other links give it, x the link's. The statistic compares the
// log-likelihood at the fitted x with that at x = 1−q0 (χ² with one degree
// of freedom, halved for one side). Observations the other links already
// lose entirely (c ≈ 0) weigh nothing, as they should.
func testLink(f *lossFit, l int, q0 float64) lossTest {
	var t lossTest
	x0, x1 := 1-q0, min(max(f.x[l], 1e-9), 1-q0)
	lossy := f.x[l] < x0 // else the fit found no more than q0: nothing to test
	var g float64
	for _, p := range f.by.of(l) {
		c := f.others(p, l)
		w := f.o.trials[p]
		k := f.o.losses[p]
		t.observed += k
		t.explained += w * (1 - c)
		t.trials += w
		if lossy {
			g += binomLogRatio(w-k, k, c*x1, c*x0)
		}
	}
	t.p = 1
	if g > 0 {
		t.p = 0.5 * math.Erfc(math.Sqrt(g))
	}
	return t
}

// binomLogRatio is log L(π1) − log L(π0) for s successes and k failures.
func binomLogRatio(s, k, pi1, pi0 float64) float64 {
	term := func(n, a, b float64) float64 {
		if n <= 0 || a == b {
			return 0
		}
		return n * (math.Log(max(a, 1e-300)) - math.Log(max(b, 1e-300)))
	}
	return term(s, pi1, pi0) + term(k, 1-pi1, 1-pi0)
}

// bhReject returns which of the p-values the Benjamini–Hochberg procedure
// rejects at false-discovery rate q over m tests.
func bhReject(ps []float64, q float64) []bool {
	order, _ := sortedPerm(len(ps), func(a, b int32) int { return cmp.Compare(ps[a], ps[b]) })
	m := float64(len(ps))
	k := -1
	for i, id := range order {
		if ps[id] <= q*float64(i+1)/m {
			k = i
		}
	}
	out := make([]bool, len(ps))
	for i := 0; i <= k; i++ {
		out[order[i]] = true
	}
	return out
}

// lossVerdicts sets EstimatedLoss, LossPValue, the loss verdict and the
// evidence of every row. Faulty needs rejection at FaultyFDR, suspect at
// SuspectFDR; both need MinExcess lost probes beyond what the other links
// explain.
func lossVerdicts(f *lossFit, c Config, rows []Row) {
	tests := make([]lossTest, len(rows))
	ps := make([]float64, len(rows))
	for l := range rows {
		tests[l] = testLink(f, l, c.NegligibleLoss)
		ps[l] = tests[l].p
	}
	faulty, suspect := bhReject(ps, c.FaultyFDR), bhReject(ps, c.SuspectFDR)
	tw := f.twins()
	for l := range rows {
		h, t := &rows[l], tests[l]
		h.EstimatedLoss = 1 - f.x[l]
		h.LossPValue = t.p
		h.Verdict = VerdictOK
		enough := t.observed-t.explained >= c.MinExcess && h.EstimatedLoss > c.NegligibleLoss
		switch {
		case enough && faulty[l]:
			h.Verdict = VerdictFaulty
		case enough && suspect[l]:
			h.Verdict = VerdictSuspect
		}
		h.Evidence = "no samples"
		if t.trials > 0 {
			h.Evidence = fmt.Sprintf("estimated %.2f%% loss: %.0f of %.0f probes lost on %d routes through it, %.1f explained by other links (p=%.2g)",
				100*h.EstimatedLoss, t.observed, t.trials, len(f.by.of(l)), t.explained, t.p)
		}
		if h.Verdict != VerdictOK {
			h.Evidence += tw.note(l, rows)
		}
	}
}

// twins groups links that carry exactly the same observations: they cannot
// be told apart (e.g. a host's uplink and the one leaf uplink it uses), so
// the fit gives the loss to one of them and the evidence names the others.
// Links are grouped by how many observations they carry and the first and
// last of them, in link order; members of a group are twins when their
// lists are equal.
type twins struct {
	by    *csr
	group map[[3]int32][]int
}

func twinKey(rs []int32) [3]int32 { return [3]int32{int32(len(rs)), rs[0], rs[len(rs)-1]} }

func newTwins(by *csr) *twins {
	t := &twins{by: by, group: make(map[[3]int32][]int)}
	for l := 0; l+1 < len(by.off); l++ {
		if rs := by.of(l); len(rs) > 0 {
			k := twinKey(rs)
			t.group[k] = append(t.group[k], l)
		}
	}
	return t
}

// note is the evidence suffix naming up to three twins of l.
func (t *twins) note(l int, rows []Row) string {
	rs := t.by.of(l)
	if len(rs) == 0 {
		return ""
	}
	var names []string
	for _, o := range t.group[twinKey(rs)] {
		if o != l && len(names) < 3 && slices.Equal(t.by.of(o), rs) {
			names = append(names, rows[o].Src+"→"+rows[o].Dst)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "; indistinguishable from " + strings.Join(names, ", ") + " (same routes)"
}
