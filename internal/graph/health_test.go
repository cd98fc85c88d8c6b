package graph

import (
	"github.com/dnms/dnms/internal/localize"

	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// smallClos: 4 spines x 8 leaves x 4 hosts = 64 host links + 64 leaf-spine
// links, every host pinging ~16 peers on 4 ports, 100 samples per key.
var smallClos = closSim{Spines: 4, Leaves: 8, HostsPerLeaf: 4, Peers: 16, Ports: 4, Samples: 100, NoiseMax: 2e-4, UnknownFrac: 0.1}

func faultyLinks(rows []LinkHealth) []LinkID {
	var out []LinkID
	for _, r := range rows {
		if r.Verdict == VerdictFaulty {
			out = append(out, LinkID{r.Src, r.Dst})
		}
	}
	slices.SortFunc(out, compareLinkIDs)
	return out
}

func rowOf(t *testing.T, rows []LinkHealth, l LinkID) LinkHealth {
	t.Helper()
	for _, r := range rows {
		if r.Src == l.Src && r.Dst == l.Dst {
			return r
		}
	}
	t.Fatalf("no row for %v", l)
	return LinkHealth{}
}

func TestHealthSynthetic(t *testing.T) {
	f := smallClos.build(rand.New(rand.NewPCG(1, 1)))
	leaf, spine, host := f.leaf, f.spine, f.hosts
	tests := []struct {
		name   string
		noise  bool
		faults map[LinkID]float64
	}{
		{"healthy fabric, no loss at all", false, nil},
		{"healthy fabric with background noise", true, nil},
		{"one bad leaf-spine link among noisy ones", true, map[LinkID]float64{{leaf[2], spine[1]}: 0.02}},
		{"one bad spine-leaf link at 0.5%", true, map[LinkID]float64{{spine[3], leaf[5]}: 0.005}},
		{"two bad links", true, map[LinkID]float64{{leaf[1], spine[0]}: 0.03, {spine[2], leaf[6]}: 0.01}},
		{"three bad links", true, map[LinkID]float64{{leaf[0], spine[0]}: 0.05, {spine[1], leaf[3]}: 0.008, {host[9], leaf[2]}: 0.02}},
		{"bad host-to-leaf link", true, map[LinkID]float64{{host[5], leaf[1]}: 0.01}},
		{"bad leaf-to-host link", true, map[LinkID]float64{{leaf[7], host[30]}: 0.05}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Several seeds: the bounds hold statistically, not for one draw.
			for seed := uint64(1); seed <= 3; seed++ {
				rng := rand.New(rand.NewPCG(seed, 42))
				loss := map[LinkID]float64{}
				if tc.noise {
					loss = f.noise(rng)
				}
				var want []LinkID
				for l, p := range tc.faults {
					loss[l] = p
					want = append(want, l)
				}
				slices.SortFunc(want, compareLinkIDs)
				routes := f.routes(rng, loss)
				rows, err := HealthOf(snapshotOf(routes))
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) != len(f.links) {
					t.Fatalf("%d rows, want one per link (%d)", len(rows), len(f.links))
				}
				if got := faultyLinks(rows); !slices.Equal(got, want) {
					t.Errorf("seed %d: faulty %v, want %v", seed, got, want)
					for _, r := range rows {
						if r.Verdict == VerdictFaulty {
							t.Logf("  F %s→%s est %.4f: %s", r.Src, r.Dst, r.EstimatedLoss, r.Evidence)
						}
					}
					for _, r := range rows[:5] {
						t.Logf("  %s→%s susp %.4f est %.4f %s: %s", r.Src, r.Dst, r.Suspicion, r.EstimatedLoss, r.Verdict, r.Evidence)
					}
				}
				if len(tc.faults) == 0 {
					if !tc.noise {
						for _, r := range rows {
							if r.Verdict != VerdictOK || r.EstimatedLoss != 0 || r.Suspicion != 0 {
								t.Fatalf("lossless fabric: %+v", r)
							}
						}
					}
					continue
				}
				// The seed score's top row is one of the faults.
				top := LinkID{rows[0].Src, rows[0].Dst}
				if _, ok := tc.faults[top]; !ok {
					t.Errorf("seed %d: top suspicion row %v is not a fault", seed, top)
				}
				// The estimate is near the truth for each fault.
				for l, p := range tc.faults {
					r := rowOf(t, rows, l)
					if r.EstimatedLoss < p/2 || r.EstimatedLoss > 2*p {
						t.Errorf("seed %d: %v estimated %.4f, true %.4f", seed, l, r.EstimatedLoss, p)
					}
					if r.RoutesThrough == 0 || r.SamplesThrough == 0 || !strings.Contains(r.Evidence, "routes through it") {
						t.Errorf("seed %d: evidence missing: %+v", seed, r)
					}
				}
			}
		})
	}
}

// TestHealthDirection checks that a one-way fault is pinned on its direction
// and that reverse losses count against the reverse route.
func TestHealthDirection(t *testing.T) {
	f := smallClos.build(rand.New(rand.NewPCG(1, 1)))
	fault := LinkID{f.spine[2], f.leaf[4]}
	back := LinkID{f.leaf[4], f.spine[2]}
	rng := rand.New(rand.NewPCG(9, 9))
	loss := f.noise(rng)
	loss[fault] = 0.03
	rows, err := HealthOf(snapshotOf(f.routes(rng, loss)))
	if err != nil {
		t.Fatal(err)
	}
	if r := rowOf(t, rows, fault); r.Verdict != VerdictFaulty {
		t.Errorf("fault %+v", r)
	}
	if r := rowOf(t, rows, back); r.Verdict != VerdictOK || r.EstimatedLoss > 0.001 {
		t.Errorf("reverse direction of the fault blamed: %+v", r)
	}
}

// A hand-made pair: A→B via r1 and B→A via r2. All of A→B's losses are
// reverse (acks lost): they belong to B→A's links.
func TestHealthReverseLossGoesToReverseRoute(t *testing.T) {
	kBA := kAB.Reverse()
	fwd := Route{ID: "ab", Hops: []string{hA, r1, hB}, Keys: []RouteKey{kAB},
		Metrics: Metrics{Samples: 1000, Lost: 50, LostReverse: 50}}
	rev := Route{ID: "ba", Hops: []string{hB, r2, hA}, Keys: []RouteKey{kBA},
		Metrics: Metrics{Samples: 1000}}
	// Other routes through r1 and r2 alone, loss-free, so the fit can tell
	// which link of B→A is bad: C→r2→A shares r2→A, B→r2→C shares B→r2.
	other1 := Route{ID: "c-a", Hops: []string{hC, r2, hA}, Keys: []RouteKey{key(hC, hA, 1)}, Metrics: Metrics{Samples: 1000}}
	t.Run("reverse route known", func(t *testing.T) {
		rows, err := HealthOf(snapshotOf([]Route{fwd, rev, other1}))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := faultyLinks(rows), []LinkID{{hB, r2}}; !slices.Equal(got, want) {
			t.Errorf("faulty %v, want %v", got, want)
		}
		for _, l := range []LinkID{{hA, r1}, {r1, hB}, {r2, hA}} {
			if r := rowOf(t, rows, l); r.EstimatedLoss > 0.001 {
				t.Errorf("%v blamed: %+v", l, r)
			}
		}
		// 1000 probes of B→A plus 1000 acks of A→B crossed it; 50 acks lost.
		if r := rowOf(t, rows, LinkID{hB, r2}); r.AvgLossThrough != 0.025 || r.SamplesThrough != 2000 {
			t.Errorf("B→r2 through: %+v", r)
		}
	})
	t.Run("reverse route unknown", func(t *testing.T) {
		// An agent alone: the reverse losses are not charged anywhere.
		rows, err := HealthOf(snapshotOf([]Route{fwd}))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Verdict != VerdictOK || r.EstimatedLoss != 0 || r.AvgLossThrough != 0 {
				t.Errorf("reverse loss charged to forward link: %+v", r)
			}
		}
	})
	t.Run("forward loss stays forward", func(t *testing.T) {
		f2 := fwd
		f2.Metrics = Metrics{Samples: 1000, Lost: 50, LostForward: 50}
		other2 := Route{ID: "a-c", Hops: []string{hA, r1, hC}, Keys: []RouteKey{key(hA, hC, 1)}, Metrics: Metrics{Samples: 1000}}
		rows, err := HealthOf(snapshotOf([]Route{f2, rev, other1, other2}))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := faultyLinks(rows), []LinkID{{r1, hB}}; !slices.Equal(got, want) {
			t.Errorf("faulty %v, want %v", got, want)
		}
	})
}

func TestHealthOrderIndependent(t *testing.T) {
	f := smallClos.build(rand.New(rand.NewPCG(1, 1)))
	rng := rand.New(rand.NewPCG(5, 5))
	loss := f.noise(rng)
	loss[LinkID{f.leaf[3], f.spine[1]}] = 0.02
	routes := f.routes(rng, loss)
	a := localize.Run(inputsOf(routes), DefaultHealthConfig())
	shuffled := slices.Clone(routes)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b := localize.Run(inputsOf(shuffled), DefaultHealthConfig())
	for i := range a {
		if a[i].Src != b[i].Src || a[i].Dst != b[i].Dst || a[i].Verdict != b[i].Verdict ||
			abs(a[i].Suspicion-b[i].Suspicion) > 1e-12 || abs(a[i].EstimatedLoss-b[i].EstimatedLoss) > 1e-9 {
			t.Fatalf("row %d differs:\n%+v\n%+v", i, a[i], b[i])
		}
	}
	for i := 1; i < len(a); i++ {
		if a[i].Suspicion > a[i-1].Suspicion {
			t.Fatalf("not sorted by suspicion at %d", i)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// The graph's Health over imported routes equals HealthOf its snapshot, and
// the agent-side path (SetRoute + AddSample) feeds the same computation.
func TestGraphHealthMatchesHealthOf(t *testing.T) {
	g, _ := newTestGraph(t)
	id, _ := g.SetRoute(kAB, hops(hA, r1, hB))
	g.SetRoute(key(hA, hC, 1), hops(hA, r1, hC))
	for i := 0; i < 100; i++ {
		g.AddSample(kAB, Sample{Seq: uint64(i), Lost: i%10 == 0, Dir: LossForward, RTT: ms(1)})
		g.AddSample(key(hA, hC, 1), Sample{Seq: uint64(i), RTT: ms(1)})
	}
	rows := g.Health()
	want, err := HealthOf(g.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rows, want) {
		t.Errorf("Health %+v\nHealthOf %+v", rows, want)
	}
	if rows[0].Src != r1 || rows[0].Dst != hB || rows[0].AvgLossThrough != 0.1 {
		t.Errorf("top row %+v (route %s)", rows[0], id)
	}
}

func TestHealthOfValidation(t *testing.T) {
	good := func() Snapshot {
		return Snapshot{
			Nodes: []Node{{ID: hA}, {ID: r1}, {ID: hB}},
			Links: []Link{{LinkID: LinkID{hA, r1}, Routes: 1}, {LinkID: LinkID{r1, hB}, Routes: 1}},
			Routes: []Route{{ID: "ab", Hops: []string{hA, r1, hB}, Keys: []RouteKey{kAB},
				Metrics: Metrics{Samples: 10, Lost: 2, LostForward: 1, LostReverse: 1, Loss: 0.2}}},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*Snapshot)
		wantErr string // "" = valid
	}{
		{"valid", func(*Snapshot) {}, ""},
		{"empty", func(s *Snapshot) { *s = Snapshot{} }, ""},
		{"hop not a node", func(s *Snapshot) { s.Routes[0].Hops[1] = r2 }, `route 0 (id "ab"`},
		{"hops not an edge", func(s *Snapshot) { s.Links = s.Links[:1] }, "not a known edge"},
		{"edge to unknown node", func(s *Snapshot) { s.Links = append(s.Links, Link{LinkID: LinkID{hA, r3}}) }, "unknown destination node"},
		{"negative samples", func(s *Snapshot) { s.Routes[0].Metrics.Samples = -1 }, "negative count"},
		{"negative lost", func(s *Snapshot) { s.Routes[0].Metrics.LostReverse = -3 }, "negative count"},
		{"lost > samples", func(s *Snapshot) { s.Routes[0].Metrics.Lost = 11 }, "lost 11 > samples 10"},
		{"fwd+rev > lost", func(s *Snapshot) { s.Routes[0].Metrics.LostForward = 2 }, "forward 2 + reverse 1 > lost 2"},
		{"one hop", func(s *Snapshot) { s.Routes[0].Hops = []string{hA} }, "need at least"},
		{"no id", func(s *Snapshot) { s.Routes[0].ID = "" }, "empty id"},
		{"duplicate node", func(s *Snapshot) { s.Nodes = append(s.Nodes, Node{ID: hA}) }, "listed twice"},
		{"negative ratio", func(s *Snapshot) { s.Routes[0].Metrics.Loss = -0.5 }, "out of range"},
		{"per-key counts", func(s *Snapshot) {
			s.Routes[0].Metrics.SamplesByKey, s.Routes[0].Metrics.LostByKey = []int{10}, []int{2}
		}, ""},
		{"per-key counts, wrong length", func(s *Snapshot) {
			s.Routes[0].Metrics.SamplesByKey, s.Routes[0].Metrics.LostByKey = []int{5, 5}, []int{1, 1}
		}, "2 samplesByKey and 2 lostByKey values for 1 keys"},
		{"per-key lost only", func(s *Snapshot) { s.Routes[0].Metrics.LostByKey = []int{2} }, "0 samplesByKey and 1 lostByKey"},
		{"per-key lost > samples", func(s *Snapshot) {
			s.Routes[0].Metrics.SamplesByKey, s.Routes[0].Metrics.LostByKey = []int{10}, []int{11}
		}, "lost 11 of 10 samples"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(&s)
			rows, err := HealthOf(s)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, rows %+v", rows)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestRouteIDStable(t *testing.T) {
	a := RouteID([]string{hA, r1, "*", hB})
	if a != RouteID([]string{hA, r1, "*xyz/2", hB}) {
		t.Error("placeholder spelling changed the id")
	}
	if a == RouteID([]string{hA, r1, hB}) || RouteID([]string{"1.2", "3"}) == RouteID([]string{"1", "2.3"}) {
		t.Error("ids collide")
	}
	// Pinned so that a change of the hash (which would orphan every stored
	// route id) is deliberate.
	if got := RouteID([]string{"198.18.0.1", "198.19.0.1", "198.18.0.2"}); got != "b1bb67eb7bcf1cd2" {
		t.Errorf("id %q", got)
	}
}

func TestHealthIndistinguishable(t *testing.T) {
	// One route only: its two links carry the same probes. One of them is
	// blamed and the evidence names the other.
	rows, err := HealthOf(snapshotOf([]Route{{ID: "ab", Hops: []string{hA, r1, hB}, Keys: []RouteKey{kAB},
		Metrics: Metrics{Samples: 1000, Lost: 50, LostForward: 50}}}))
	if err != nil {
		t.Fatal(err)
	}
	got := faultyLinks(rows)
	if len(got) != 1 {
		t.Fatalf("faulty %v, want one of the two", got)
	}
	for _, r := range rows {
		if r.Verdict == VerdictFaulty && !strings.Contains(r.Evidence, "indistinguishable from") {
			t.Errorf("evidence %q", r.Evidence)
		}
	}
}
