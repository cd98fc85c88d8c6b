package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/plan/simclos"
)

// meshOf builds a fabric, its cluster plan at this budget (0: full mesh)
// and the plan's mesh set.
func meshOf(t *testing.T, shape simclos.Fabric, budget int) (*simclos.Fabric, clusterPlan, *meshSet) {
	t.Helper()
	f := simclos.New(shape)
	ms := make([]plan.Member, len(f.Hosts))
	for i, h := range f.Hosts {
		ms[i] = plan.Member{Name: h.Name, Addr: h.Addr, Rack: h.Rack}
	}
	pc := plan.DefaultConfig()
	pc.Budget = budget
	cp := planAll(f, ms, pc, time.Unix(0, 0))
	m, err := newMeshSet(f, cp, 11)
	if err != nil {
		t.Fatal(err)
	}
	return f, cp, m
}

// TestMeshRoutesAreRoutesOf: the mesh set lists routesOf's routes, in its
// order, with the same hops and ports, on a two- and a three-tier fabric.
func TestMeshRoutesAreRoutesOf(t *testing.T) {
	for _, shape := range []simclos.Fabric{
		{Spines: 4, ToRs: 3, HostsPerToR: 5},
		{Pods: 2, ToRs: 2, Aggs: 3, Spines: 4, HostsPerToR: 4},
	} {
		f, cp, m := meshOf(t, shape, 6)
		want := routesOf(f, cp, 11)
		if len(m.in) != len(want) {
			t.Fatalf("%d routes, routesOf has %d", len(m.in), len(want))
		}
		for i, w := range want {
			r := m.in[i]
			hops := make([]string, len(r.Nodes))
			for j, n := range r.Nodes {
				hops[j] = m.names[n]
			}
			if !slices.Equal(hops, w.hops) || !slices.Equal(r.Ports, w.ports) {
				t.Fatalf("route %d: hops %v ports %v, routesOf has %v %v", i, hops, r.Ports, w.hops, w.ports)
			}
		}
		before := slices.Clone(m.in)
		perm := m.sortByPath()
		for i, p := range perm {
			if !slices.Equal(m.in[i].Nodes, before[p].Nodes) || !slices.Equal(m.in[i].Ports, before[p].Ports) {
				t.Fatalf("sorted route %d is not route %d", i, p)
			}
			if i > 0 {
				a, b := m.in[i-1].Nodes, m.in[i].Nodes
				if slices.Compare(a[1:len(a)-1], b[1:len(b)-1]) > 0 {
					t.Fatalf("sorted routes %d and %d out of router-path order", i-1, i)
				}
			}
		}
	}
}

// TestMeshMatchesAggregate: the localization figures through the mesh set
// are the aggregator's: for the sampled plan and a full mesh, with 0, 1
// and 3 faulty links, the estimator's rows on the mesh set are the rows of
// graph.Health after every route is imported into an aggregator graph
// (aggregate), link for link, and so are the scores.
func TestMeshMatchesAggregate(t *testing.T) {
	if testing.Short() {
		t.Skip("imports ~60 k routes into aggregator graphs; -short")
	}
	for _, shape := range []simclos.Fabric{
		{Spines: 4, ToRs: 5, HostsPerToR: 20},                   // shape(100)
		{Pods: 3, ToRs: 3, Aggs: 4, Spines: 8, HostsPerToR: 10}, // 90 hosts, three tiers
	} {
		for _, budget := range []int{plan.DefaultConfig().Budget / 4, 0} {
			f, cp, m := meshOf(t, shape, budget)
			// The harness sorts the routes before drawing: import them
			// into the aggregator in that order, so both draw the same.
			unsorted := routesOf(f, cp, 11)
			routes := make([]flowRoute, len(unsorted))
			for i, p := range m.sortByPath() {
				routes[i] = unsorted[p]
			}
			for _, k := range []int{0, 1, 3} {
				lossy := faults(f, k, 0.05, rand.New(rand.NewPCG(1, uint64(k))))
				a, err := aggregate(routes, lossy, 0.0001, 5, rand.New(rand.NewPCG(7, 5)), false)
				if err != nil {
					t.Fatal(err)
				}
				m.draw(lossy, background{max: 0.0001, seed: 5}, 100, rand.New(rand.NewPCG(7, 5)))
				rows := m.rank()
				if err := sameRows(rows, a.ranking); err != nil {
					t.Fatalf("%d hosts, budget %d, %d faults: %v", len(f.Hosts), budget, k, err)
				}
				p1, f1, alarms := score(rows, lossy)
				if p1 != a.precision1 || f1 != a.f1 || alarms != a.falseAlarms {
					t.Fatalf("%d hosts, budget %d, %d faults: scores %v %v %d, aggregate %v %v %d",
						len(f.Hosts), budget, k, p1, f1, alarms, a.precision1, a.f1, a.falseAlarms)
				}
				if k > 0 && !slices.ContainsFunc(rows, func(r graph.LinkHealth) bool { return r.Verdict == graph.VerdictFaulty }) {
					t.Fatalf("%d hosts, budget %d, %d faults: no faulty row, nothing compared", len(f.Hosts), budget, k)
				}
			}
		}
	}
}

// sameRows: the same links in the same order, with the same verdicts and,
// to rounding, the same scores and estimates.
func sameRows(got, want []graph.LinkHealth) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d rows, want %d", len(got), len(want))
	}
	near := func(a, b float64) bool { return a == b || math.Abs(a-b) <= 1e-12*math.Max(math.Abs(a), math.Abs(b)) }
	for i := range got {
		g, w := got[i], want[i]
		if g.Src != w.Src || g.Dst != w.Dst || g.Verdict != w.Verdict || g.RoutesThrough != w.RoutesThrough ||
			g.SamplesThrough != w.SamplesThrough || !near(g.Suspicion, w.Suspicion) ||
			!near(g.EstimatedLoss, w.EstimatedLoss) || !near(g.LossPValue, w.LossPValue) {
			return fmt.Errorf("row %d: %+v, want %+v", i, g, w)
		}
	}
	return nil
}

// TestScore: the score can fail, a healthy link first is precision@1 0 and
// a missed or a false faulty link lowers F1.
func TestScore(t *testing.T) {
	bad := map[graph.LinkID]float64{{Src: "a", Dst: "b"}: 0.05, {Src: "c", Dst: "d"}: 0.05}
	row := func(s, d string, v graph.Verdict) graph.LinkHealth {
		return graph.LinkHealth{Src: s, Dst: d, Verdict: v}
	}
	for _, c := range []struct {
		rows   []graph.LinkHealth
		p1, f1 float64
		alarms int
	}{
		{[]graph.LinkHealth{row("a", "b", "faulty"), row("c", "d", "faulty"), row("e", "f", "ok")}, 1, 1, 0},
		{[]graph.LinkHealth{row("e", "f", "suspect"), row("a", "b", "faulty"), row("c", "d", "ok")}, 0, 2.0 / 3, 1},
		{[]graph.LinkHealth{row("a", "b", "faulty"), row("e", "f", "faulty"), row("c", "d", "faulty")}, 1, 0.8, 1},
		{[]graph.LinkHealth{row("e", "f", "ok")}, 0, 0, 0},
	} {
		p1, f1, alarms := score(c.rows, bad)
		if p1 != c.p1 || math.Abs(f1-c.f1) > 1e-12 || alarms != c.alarms {
			t.Errorf("%v: p@1 %v F1 %v alarms %d, want %v %v %d", c.rows, p1, f1, alarms, c.p1, c.f1, c.alarms)
		}
	}
}

// TestMeshRoutesEstimate: the full mesh's route count that the harness
// prints where it does not build the mesh is within 2% of the count.
func TestMeshRoutesEstimate(t *testing.T) {
	for _, shape := range []simclos.Fabric{
		{Spines: 4, ToRs: 4, HostsPerToR: 10},
		{Pods: 3, ToRs: 3, Aggs: 4, Spines: 8, HostsPerToR: 10},
	} {
		f, _, m := meshOf(t, shape, 0)
		est := meshRoutesEstimate(f)
		t.Logf("%d hosts: estimate %.0f, built %d", len(f.Hosts), est, len(m.in))
		if got := float64(len(m.in)); math.Abs(est-got) > 0.02*got {
			t.Errorf("%d hosts: estimate %.0f routes, the full mesh has %.0f", len(f.Hosts), est, got)
		}
	}
}
