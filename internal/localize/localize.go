package localize

import (
	"cmp"
	"slices"
)

// Run computes one Row per link crossed by the routes in in, sorted by
// seed suspicion (descending; see SortBySuspicion). The result does not
// depend on the order of in.
func Run(in []Input, c Config) []Row { return run(in, nil, c) }

// RunNumbered is Run for routes whose hops the caller numbered (Input.Nodes
// index names; names may have unused entries): the nodes are not hashed
// by name, which is most of what indexing costs at 10⁵ routes. The rows
// are Run's for the same hop names.
func RunNumbered(names []string, in []Input, c Config) []Row { return run(in, names, c) }

func run(in []Input, names []string, c Config) []Row {
	c = c.WithDefaults()
	ix := indexLinks(in, names)
	keyOff, rev := reverses(in, ix)
	return estimate(in, ix, keyOff, rev, c, &fitStart{}, &fitBufs{})
}

// SortBySuspicion orders rows the seed's way: suspicion descending, then
// estimated loss descending, then link.
func SortBySuspicion(rows []Row) {
	slices.SortStableFunc(rows, func(a, b Row) int {
		if c := cmp.Compare(b.Suspicion, a.Suspicion); c != 0 {
			return c
		}
		if c := cmp.Compare(b.EstimatedLoss, a.EstimatedLoss); c != 0 {
			return c
		}
		return compareLinks(a, b)
	})
}

// SortByEstimate orders rows by verdict (faulty, suspect, slow, ok), then
// estimated loss, then estimated delay, then the delay seed score (all
// descending), then link.
func SortByEstimate(rows []Row) {
	slices.SortStableFunc(rows, func(a, b Row) int {
		if c := cmp.Compare(verdictRank(a.Verdict), verdictRank(b.Verdict)); c != 0 {
			return c
		}
		if c := cmp.Compare(b.EstimatedLoss, a.EstimatedLoss); c != 0 {
			return c
		}
		if c := cmp.Compare(b.EstimatedDelaySeconds, a.EstimatedDelaySeconds); c != 0 {
			return c
		}
		// Below the fit's penalty a small delay is estimated 0 on every
		// link: the seed score still ranks it.
		if c := cmp.Compare(b.DelayExcessSeconds, a.DelayExcessSeconds); c != 0 {
			return c
		}
		return compareLinks(a, b)
	})
}

func verdictRank(v Verdict) int {
	switch v {
	case VerdictFaulty:
		return 0
	case VerdictSuspect:
		return 1
	case VerdictSlow:
		return 2
	}
	return 3
}

func compareLinks(a, b Row) int {
	if c := cmp.Compare(a.Src, b.Src); c != 0 {
		return c
	}
	return cmp.Compare(a.Dst, b.Dst)
}
