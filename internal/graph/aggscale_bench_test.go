package graph_test

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/plan/simclos"
)

// Aggregator benchmarks over the scale harness's route set (issue 10):
// every agent's routes at N hosts with the production plan, imported as
// the aggregator imports them. Run:
//
//	go test -run '^$' -bench Aggregator -benchtime 3x ./internal/graph
//
// BenchmarkAggregatorHealth times a health computation (what the cache
// does once per graph change) against the previous way of building the
// estimator's input, by name, in the same run; BenchmarkAggregatorMemory
// reports the live heap per route.

// aggRoute is one agent's distinct route to a peer and its ports, as the
// scale harness (scripts/scale) builds them.
type aggRoute struct {
	src, dst netip.Addr
	hops     []string
	ports    []uint16
}

// harnessRoutes is every agent's routes at N hosts with the production
// plan (-pingPeers 64, 11 ports), over the harness's fabric shape.
func harnessRoutes(n int) []aggRoute {
	var sh simclos.Fabric
	switch {
	case n <= 150:
		sh = simclos.Fabric{Spines: 4, ToRs: max(n/20, 1), HostsPerToR: 20}
	case n <= 400:
		sh = simclos.Fabric{Spines: 4, ToRs: max(n/30, 1), HostsPerToR: 30}
	default:
		sh = simclos.Fabric{Pods: max(n/200, 1), ToRs: 5, Aggs: 4, Spines: 8, HostsPerToR: 40}
	}
	f := simclos.New(sh)
	members := make([]plan.Member, len(f.Hosts))
	for i, h := range f.Hosts {
		members[i] = plan.Member{Name: h.Name, Addr: h.Addr, Rack: h.Rack}
	}
	pc := plan.DefaultConfig()
	now := time.Unix(1_800_000_000, 0)
	var out []aggRoute
	for _, h := range f.Hosts {
		c := pc
		c.Self, c.SelfRack = h.Name, h.Rack
		for _, p := range plan.Select(c, members, now) {
			for _, g := range f.Routes(h.Addr, p.Addr, 11) {
				out = append(out, aggRoute{src: h.Addr, dst: p.Addr, hops: g.Hops, ports: g.Ports})
			}
		}
	}
	return out
}

// importHarness imports routes with the harness's metrics: 100 samples,
// one lost on 1% of the routes. With fresh, each route's hop strings are
// new copies, as a member stream's decoder hands them over.
func importHarness(routes []aggRoute, rng *rand.Rand, fresh bool) *graph.Graph {
	g := graph.New(graph.DefaultConfig())
	for _, r := range routes {
		if fresh {
			hops := make([]string, len(r.hops))
			for k, h := range r.hops {
				hops[k] = strings.Clone(h)
			}
			r.hops = hops
		}
		keys := make([]graph.RouteKey, len(r.ports))
		for i, p := range r.ports {
			keys[i] = graph.RouteKey{Src: r.src, Dst: r.dst, SrcPort: p}
		}
		lost := 0
		if rng.IntN(100) == 0 {
			lost = 1
		}
		g.ImportRoute(r.src.String(), graph.Route{Src: r.src, Dst: r.dst, Hops: r.hops, Keys: keys,
			Metrics: graph.Metrics{Samples: 100, Lost: lost, LostForward: lost, RTTMin: 20e-6, RTTAvg: 30e-6,
				RTTP50: 30e-6, RTTP99: 50e-6, RTTMax: 60e-6, Source: "ebpf"}})
	}
	return g
}

// BenchmarkAggregatorHealth: Health (inputs kept in slots, hops as node
// numbers: "numbered") against the previous code's way on the same graph
// ("by-name": a walk of the route map, each route's input built under its
// lock, hop names hashed by the estimator). Both use the same estimator.
func BenchmarkAggregatorHealth(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			routes := harnessRoutes(n)
			g := importHarness(routes, rand.New(rand.NewPCG(1, 2)), false)
			byNameRun := graph.HealthByName(g)
			var numbered, byName time.Duration
			var allocNum, allocName uint64
			for i := 0; i < b.N; i++ {
				runtime.GC()
				graph.ColdHealth(g)
				a0 := allocated()
				t0 := time.Now()
				rows := g.Health()
				numbered += time.Since(t0)
				allocNum += allocated() - a0
				runtime.GC()
				a0 = allocated()
				t0 = time.Now()
				ref := byNameRun()
				byName += time.Since(t0)
				allocName += allocated() - a0
				if err := graph.SameRanking(rows, ref); err != nil {
					b.Fatalf("numbered vs by-name: %v", err)
				}
			}
			nb := float64(b.N)
			b.ReportMetric(float64(len(routes)), "routes")
			b.ReportMetric(float64(numbered.Milliseconds())/nb, "numbered-ms")
			b.ReportMetric(float64(byName.Milliseconds())/nb, "by-name-ms")
			b.ReportMetric(float64(byName)/float64(numbered), "by-name/numbered")
			b.ReportMetric(float64(allocNum)/nb/(1<<20), "numbered-MiB-alloc")
			b.ReportMetric(float64(allocName)/nb/(1<<20), "by-name-MiB-alloc")
		})
	}
}

// BenchmarkAggregatorMemory: the live heap an aggregator holds per route
// of the harness's route set, hop strings freshly allocated per route as
// a member stream's decoder hands them over (the harness itself imports
// its own strings, so its heap leaves the hop strings out).
func BenchmarkAggregatorMemory(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			routes := harnessRoutes(n)
			var perRoute float64
			for i := 0; i < b.N; i++ {
				h0 := graph.HeapNow()
				g := importHarness(routes, rand.New(rand.NewPCG(1, 2)), true)
				h1 := graph.HeapNow()
				perRoute = float64(h1-h0) / float64(len(routes))
				runtime.KeepAlive(g)
			}
			b.ReportMetric(float64(len(routes)), "routes")
			b.ReportMetric(perRoute, "B/route")
		})
	}
}

func allocated() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}
