package localize

import (
	"math"
	"slices"
	"testing"
)

// in builds an Input over hops with loss counts.
func in(hops []string, ports []uint16, samples, lost, fwd, rev int) Input {
	return Input{Hops: hops, Ports: ports, Samples: samples, Lost: lost, LostForward: fwd, LostReverse: rev}
}

func linkNames(ix *index) []string {
	var out []string
	for l := range ix.linkEnds {
		s, d := ix.linkName(l)
		out = append(out, s+">"+d)
	}
	return out
}

func TestIndexLinks(t *testing.T) {
	routes := []Input{
		in([]string{"h2", "r", "h1"}, []uint16{1}, 10, 0, 0, 0),
		in([]string{"h1", "r", "x", "r", "h2"}, []uint16{1}, 10, 0, 0, 0), // loops through r
	}
	ix := indexLinks(routes, nil)
	want := []string{"h1>r", "h2>r", "r>h1", "r>h2", "r>x", "x>r"}
	if got := linkNames(ix); !slices.Equal(got, want) {
		t.Fatalf("links %v, want %v (sorted by src, dst)", got, want)
	}
	// Route 1 crosses r→x, x→r once each and never repeats a link.
	var r1 []string
	for _, l := range ix.routeLinks(1) {
		s, d := ix.linkName(int(l))
		r1 = append(r1, s+">"+d)
	}
	if want := []string{"h1>r", "r>x", "x>r", "r>h2"}; !slices.Equal(r1, want) {
		t.Errorf("route 1 links %v, want %v", r1, want)
	}
	if s, d := ix.ends(0); ix.names[s] != "h2" || ix.names[d] != "h1" {
		t.Errorf("route 0 ends %s, %s", ix.names[s], ix.names[d])
	}
}

func TestSortedPerm(t *testing.T) {
	v := []int32{30, 10, 20}
	perm, rank := sortedPerm(3, func(a, b int32) int { return int(v[a] - v[b]) })
	if !slices.Equal(perm, []int32{1, 2, 0}) || !slices.Equal(rank, []int32{2, 0, 1}) {
		t.Errorf("perm %v rank %v", perm, rank)
	}
}

func TestSplitLoss(t *testing.T) {
	tests := []struct {
		name             string
		r                Input
		haveRev          bool
		wantFwd, wantRev float64
	}{
		{"all known", in(nil, nil, 100, 5, 3, 2), true, 3, 2},
		{"unknown split by known share", in(nil, nil, 100, 8, 3, 1), true, 3 + 4*0.75, 1 + 4*0.25},
		{"no direction known: forward", in(nil, nil, 100, 4, 0, 0), true, 4, 0},
		{"no reverse route: split the same", in(nil, nil, 100, 8, 3, 1), false, 6, 2},
		{"dead reverse path, no reverse route", in(nil, nil, 100, 100, 0, 90), false, 0, 100},
		{"counts clamped", in(nil, nil, 10, 20, 30, 5), true, 10, 0},
	}
	for _, tc := range tests {
		f, r := splitLoss(tc.r)
		if math.Abs(f-tc.wantFwd) > 1e-9 || math.Abs(r-tc.wantRev) > 1e-9 {
			t.Errorf("%s: got %v/%v, want %v/%v", tc.name, f, r, tc.wantFwd, tc.wantRev)
		}
	}
}

func TestSplitDirections(t *testing.T) {
	a2b := []string{"a", "x", "b"}
	b2a := []string{"b", "y", "a"}
	t.Run("reverse losses go to the reverse route", func(t *testing.T) {
		routes := []Input{in(a2b, []uint16{7}, 100, 10, 4, 6), in(b2a, []uint16{7}, 100, 0, 0, 0)}
		ix := indexLinks(routes, nil)
		revOff, rev := reverses(routes, ix)
		o := splitDirections(routes, ix, revOff, rev)
		// a→b: its 100 probes plus the 100 acks of b→a's probes.
		if o.trials[0] != 200 || o.losses[0] != 4 {
			t.Errorf("a→b: %v trials %v losses, want 200 and 4", o.trials[0], o.losses[0])
		}
		if o.trials[1] != 100+96 || o.losses[1] != 6 {
			t.Errorf("b→a: %v trials %v losses, want 196 and 6", o.trials[1], o.losses[1])
		}
	})
	t.Run("no reverse route: reverse losses dropped", func(t *testing.T) {
		routes := []Input{in(a2b, []uint16{7}, 100, 10, 4, 6)}
		ix := indexLinks(routes, nil)
		revOff, rev := reverses(routes, ix)
		o := splitDirections(routes, ix, revOff, rev)
		if len(o.trials) != 1 || o.losses[0] != 4 {
			t.Errorf("got %v losses over %d observations, want 4 over 1", o.losses, len(o.trials))
		}
	})
	t.Run("no direction: one round-trip observation", func(t *testing.T) {
		routes := []Input{in(a2b, []uint16{7}, 100, 10, 0, 0), in(b2a, []uint16{7}, 100, 0, 0, 0)}
		ix := indexLinks(routes, nil)
		revOff, rev := reverses(routes, ix)
		o := splitDirections(routes, ix, revOff, rev)
		if len(o.trials) != 3 || o.losses[2] != 10 || len(o.of(2)) != 4 {
			t.Errorf("observations %d, last %v losses over %d links; want 3, 10 over 4", len(o.trials), o.losses[2], len(o.of(2)))
		}
		// a→b keeps only the acks of b→a's probes.
		if o.trials[0] != 100 || o.losses[0] != 0 {
			t.Errorf("the forward observation got %v trials %v losses, want 100 and 0", o.trials[0], o.losses[0])
		}
	})
}

func TestSeedScore(t *testing.T) {
	routes := []Input{
		in([]string{"a", "x", "b"}, []uint16{1}, 100, 10, 10, 0),
		in([]string{"a", "y", "b"}, []uint16{1}, 100, 0, 0, 0),
	}
	ix := indexLinks(routes, nil)
	revOff, rev := reverses(routes, ix)
	o := splitDirections(routes, ix, revOff, rev)
	rows := make([]Row, ix.nLinks())
	seedScore(o, ix, rows)
	for _, r := range rows {
		want := -0.05 // a→b shared
		switch r.Src + r.Dst {
		case "ax", "xb":
			want = 0.1
		case "ay", "yb":
			want = -0.1
		}
		if r.Src == "a" && r.Dst == "x" && (r.RoutesThrough != 1 || r.SamplesNotThrough != 100) {
			t.Errorf("a→x evidence %+v", r)
		}
		if math.Abs(r.Suspicion-want) > 1e-9 {
			t.Errorf("%s→%s suspicion %v, want %v", r.Src, r.Dst, r.Suspicion, want)
		}
	}
}

// linkP fits one route of n probes with k lost and tests its first link.
func linkP(n, k int) float64 {
	routes := []Input{in([]string{"a", "b"}, []uint16{1}, n, k, k, 0)}
	ix := indexLinks(routes, nil)
	revOff, rev := reverses(routes, ix)
	o := splitDirections(routes, ix, revOff, rev)
	return testLink(fitLoss(o, ix.nLinks(), DefaultConfig()), 0, DefaultConfig().NegligibleLoss).p
}

func TestLinkLRTest(t *testing.T) {
	if p := linkP(1000, 0); p != 1 {
		t.Errorf("no loss: p %v, want 1", p)
	}
	// 1 of 10000 (0.01%) is below the negligible 0.05%: nothing to test.
	if p := linkP(10000, 1); p != 1 {
		t.Errorf("0.01%% loss: p %v, want 1", p)
	}
	// 20 of 10000 (0.2%) against 0.05%: G/2 = 20 ln 4 + 9980 ln(0.998/0.9995)
	// ≈ 12.74, p = erfc(√12.74)/2 ≈ 2.2e-7.
	if p := linkP(10000, 20); p < 1e-7 || p > 5e-7 {
		t.Errorf("0.2%% of 10000: p %v, want ≈ 2.2e-7", p)
	}
	if a, b := linkP(10000, 30), linkP(10000, 20); a >= b {
		t.Errorf("p not decreasing in the losses: %v >= %v", a, b)
	}
	if a, b := linkP(20000, 40), linkP(10000, 20); a >= b {
		t.Errorf("p not decreasing in the evidence at the same loss: %v >= %v", a, b)
	}
}

func TestBHReject(t *testing.T) {
	ps := []float64{0.01, 0.04, 0.03, 0.2, 0.001}
	// Sorted: 0.001 0.01 0.03 0.04 0.2; at q=0.05 the bars are
	// 0.01 0.02 0.03 0.04 0.05: ranks 1..4 pass (step-up).
	got := bhReject(ps, 0.05)
	if want := []bool{true, true, true, false, true}; !slices.Equal(got, want) {
		t.Errorf("q=0.05: %v, want %v", got, want)
	}
	if got := bhReject(ps, 0.001); !slices.Equal(got, []bool{false, false, false, false, false}) {
		t.Errorf("q=0.001: %v, want none", got)
	}
}

func TestFitLossUnbiased(t *testing.T) {
	// The docs' example: 20 of 200 probes lost on a link no other route
	// crosses. The penalised fit alone says ~9%; the refit says 10%.
	routes := []Input{
		in([]string{"a", "x", "b"}, []uint16{1}, 200, 20, 20, 0),
		in([]string{"c", "x", "d"}, []uint16{1}, 200, 0, 0, 0),
	}
	ix := indexLinks(routes, nil)
	revOff, rev := reverses(routes, ix)
	o := splitDirections(routes, ix, revOff, rev)
	pen := newLossFit(o, ix.nLinks())
	pen.run(pen.lossy(), 2, 200)
	f := fitLoss(o, ix.nLinks(), DefaultConfig())
	worst := 0.0
	for l := range f.x {
		worst = max(worst, 1-f.x[l])
	}
	if math.Abs(worst-0.1) > 1e-3 {
		t.Errorf("refit estimate %v, want 0.10", worst)
	}
	penWorst := 0.0
	for l := range pen.x {
		penWorst = max(penWorst, 1-pen.x[l])
	}
	if penWorst >= 0.099 {
		t.Errorf("penalised estimate %v: the test no longer shows the bias", penWorst)
	}
}

func TestResplit(t *testing.T) {
	o := &obs{losses: []float64{0, 5, 5}, shares: []share{{targets: []int32{1, 2}, lost: 10}}}
	prod := []float64{1, 0.9, 1} // route 1 loses 10%, route 2 nothing
	o.resplit(prod, 0)
	if o.losses[1] != 10 || o.losses[2] != 0 {
		t.Errorf("losses %v, want all 10 on route 1", o.losses)
	}
	o.resplit([]float64{1, 1, 1}, 0.01) // no evidence: even again
	if math.Abs(o.losses[1]-5) > 1e-9 || math.Abs(o.losses[2]-5) > 1e-9 {
		t.Errorf("losses %v, want 5 and 5", o.losses)
	}
}

func TestTwinsNote(t *testing.T) {
	by := &csr{off: []int32{0, 2, 4, 5}, obs: []int32{0, 1, 0, 1, 1}}
	rows := []Row{{Src: "a", Dst: "b"}, {Src: "b", Dst: "c"}, {Src: "c", Dst: "d"}}
	tw := newTwins(by)
	if got := tw.note(0, rows); got != "; indistinguishable from b→c (same routes)" {
		t.Errorf("note %q", got)
	}
	if got := tw.note(2, rows); got != "" {
		t.Errorf("link with distinct routes: note %q", got)
	}
}

func TestSortByEstimate(t *testing.T) {
	rows := []Row{
		{Src: "a", Verdict: VerdictOK, Suspicion: 0.5},
		{Src: "b", Verdict: VerdictSlow, EstimatedDelaySeconds: 1e-3},
		{Src: "c", Verdict: VerdictFaulty, EstimatedLoss: 0.01},
		{Src: "d", Verdict: VerdictFaulty, EstimatedLoss: 0.02},
		{Src: "e", Verdict: VerdictSuspect, EstimatedLoss: 0.5},
	}
	SortByEstimate(rows)
	var got string
	for _, r := range rows {
		got += r.Src
	}
	if got != "dceba" {
		t.Errorf("order %s, want dceba", got)
	}
	SortBySuspicion(rows)
	if rows[0].Src != "a" {
		t.Errorf("suspicion order starts with %s", rows[0].Src)
	}
}
