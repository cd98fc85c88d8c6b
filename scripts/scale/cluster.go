package main

import (
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/plan/simclos"
)

// clusterPlan is every agent's picks.
type clusterPlan map[netip.Addr][]plan.Pick

func planAll(f *simclos.Fabric, members []plan.Member, pc plan.Config, now time.Time) clusterPlan {
	out := make(clusterPlan, len(f.Hosts))
	for _, h := range f.Hosts {
		c := pc
		c.Self, c.SelfRack = h.Name, h.Rack
		out[h.Addr] = plan.Select(c, members, now)
	}
	return out
}

// flowRoute is one agent's distinct route to a peer and the ports on it.
type flowRoute struct {
	src, dst netip.Addr
	hops     []string
	ports    []uint16
}

// routesOf lists each agent's distinct routes over ports source ports.
func routesOf(f *simclos.Fabric, cp clusterPlan, ports int) []flowRoute {
	var out []flowRoute
	for _, h := range f.Hosts {
		for _, p := range cp[h.Addr] {
			for _, g := range f.Routes(h.Addr, p.Addr, ports) {
				out = append(out, flowRoute{src: h.Addr, dst: p.Addr, hops: g.Hops, ports: g.Ports})
			}
		}
	}
	return out
}

// routerLoad spreads the measured per-agent TTL-expired answers over the
// routers of every agent's routes: an agent's answers at TTL t are shared
// by the routers at position t of its routes. It returns the max and p99
// answers per second per router.
func routerLoad(routes []flowRoute, perAgentTTL map[int]float64) (maxLoad, p99 float64, top string) {
	byAgent := make(map[netip.Addr][]flowRoute)
	for _, r := range routes {
		byAgent[r.src] = append(byAgent[r.src], r)
	}
	load := make(map[string]float64)
	for _, rs := range byAgent {
		for ttl, rate := range perAgentTTL {
			var at []string
			for _, r := range rs {
				if ttl < len(r.hops)-1 {
					at = append(at, r.hops[ttl])
				}
			}
			for _, h := range at {
				load[h] += rate / float64(len(at))
			}
		}
	}
	vals := make([]float64, 0, len(load))
	for r, v := range load {
		vals = append(vals, v)
		if v > maxLoad {
			maxLoad, top = v, r
		}
	}
	if len(vals) == 0 {
		return 0, 0, ""
	}
	slices.Sort(vals)
	return maxLoad, vals[int(math.Ceil(0.99*float64(len(vals))))-1], top
}

// faults picks k distinct fabric links between routers (ToR–spine,
// ToR–agg, agg–spine) and gives them loss.
func faults(f *simclos.Fabric, k int, loss float64, rng *rand.Rand) map[graph.LinkID]float64 {
	isHost := make(map[string]bool)
	for _, h := range f.Hosts {
		isHost[h.Addr.String()] = true
	}
	var cand []graph.LinkID
	for _, l := range f.Links() {
		if !isHost[l.Src] && !isHost[l.Dst] {
			cand = append(cand, l)
		}
	}
	out := make(map[graph.LinkID]float64)
	for len(out) < k {
		out[cand[rng.IntN(len(cand))]] = loss
	}
	return out
}

// background gives every link a loss in [0, max) fixed by the link's name
// and the seed: the fabric's noise floor, a property of the link as on a
// real fabric, and the same for the sampled and the full-mesh route sets
// whatever order they touch the links in.
type background struct {
	max  float64
	seed uint64
}

func (b background) of(l graph.LinkID) float64 {
	h := fnv.New64a()
	h.Write([]byte(l.Src + "→" + l.Dst))
	return b.max * float64((h.Sum64()^b.seed)>>11) / (1 << 53)
}

// metricsFor draws samples pings' outcome on a route whose forward links
// lose as lossy says, plus their background loss.
func metricsFor(hops []string, lossy map[graph.LinkID]float64, samples int, noise background, rng *rand.Rand) graph.Metrics {
	keep := keepOf(hops, lossy, noise)
	lost := 0
	for range samples {
		if rng.Float64() > keep {
			lost++
		}
	}
	return lostMetrics(samples, lost)
}

// keepOf is the chance that a ping on hops crosses every link.
func keepOf(hops []string, lossy map[graph.LinkID]float64, noise background) float64 {
	keep := 1.0
	for i := 0; i+1 < len(hops); i++ {
		l := graph.LinkID{Src: hops[i], Dst: hops[i+1]}
		keep *= (1 - lossy[l]) * (1 - noise.of(l))
	}
	return keep
}

// lostMetrics is a window of samples pings, lost of them lost forward.
func lostMetrics(samples, lost int) graph.Metrics {
	return graph.Metrics{Samples: samples, Lost: lost, LostForward: lost,
		Loss: float64(lost) / float64(samples), LossForward: float64(lost) / float64(samples),
		RTTMin: 20e-6, RTTAvg: 30e-6, RTTP50: 30e-6, RTTP99: 50e-6, RTTMax: 60e-6, Source: "ebpf"}
}

// moveWindow slides a window of samples pings with lost of them lost by
// moved pings: the oldest moved leave (each lost with the window's share),
// as many new ones are drawn with the route's keep chance.
func moveWindow(samples, lost, moved int, keep float64, rng *rand.Rand) int {
	for range min(moved, samples) {
		if rng.Float64() < float64(lost)/float64(samples) {
			lost--
		}
		if rng.Float64() > keep {
			lost++
		}
	}
	return lost
}

// aggFigures are the aggregator's measurements over one route set.
type aggFigures struct {
	routes, links  int
	heapBytes      uint64
	merge          time.Duration // importing every agent's routes
	cpu            time.Duration // process CPU during merge + health
	health         time.Duration // the first ranking (the estimator starts cold)
	batchApply     time.Duration // one route-batch round: every route's window moved
	healthWarm     time.Duration // the ranking after that round (warm estimator)
	healthWarmCPU  time.Duration
	warmRanking    []graph.LinkHealth
	lossy          map[graph.LinkID]float64
	batchRoutes    int           // routes the round changed
	healthLatency  time.Duration // GET /v1/aggregator/graph/edges/health
	ranking        []graph.LinkHealth
	precision1, f1 float64
	falseAlarms    int // faulty or suspect links without a fault
}

// aggregate imports every route into a fresh graph the way the aggregator
// does (ImportRoute per member), then ranks links and serves the health
// endpoint through the real API.
func aggregate(routes []flowRoute, lossy map[graph.LinkID]float64, noiseMax float64, noiseSeed uint64, rng *rand.Rand, withAPI bool) (aggFigures, error) {
	fig := aggFigures{lossy: lossy}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	cpu0 := processCPU()
	g := graph.New(graph.DefaultConfig())
	noise := background{max: noiseMax, seed: noiseSeed}
	lost := make([]int, len(routes))
	t0 := time.Now()
	for i, r := range routes {
		keys := make([]graph.RouteKey, len(r.ports))
		for i, p := range r.ports {
			keys[i] = graph.RouteKey{Src: r.src, Dst: r.dst, SrcPort: p}
		}
		m := metricsFor(r.hops, lossy, 100, noise, rng)
		lost[i] = m.Lost
		g.ImportRoute(r.src.String(), graph.Route{Src: r.src, Dst: r.dst, Hops: r.hops, Keys: keys, Metrics: m})
	}
	fig.merge = time.Since(t0)
	t1 := time.Now()
	fig.ranking = g.Health()
	fig.health = time.Since(t1)
	fig.cpu = processCPU() - cpu0
	if withAPI {
		// Steady state: every member's next batch (-aggregateInterval 5s
		// at one ping a second) moves every route's window by 5 of its 100
		// samples, applied per member as the aggregator applies a
		// route-batch event; then health again, the health cache's
		// estimator starting from its last run.
		byOrigin := make(map[string][]graph.RouteMetrics)
		for i, r := range routes {
			o := r.src.String()
			l := moveWindow(100, lost[i], 5, keepOf(r.hops, lossy, noise), rng)
			byOrigin[o] = append(byOrigin[o], graph.RouteMetrics{ID: graph.RouteID(r.hops), Metrics: lostMetrics(100, l)})
		}
		t2 := time.Now()
		for o, b := range byOrigin {
			fig.batchRoutes += g.ImportMetrics(o, b)
		}
		fig.batchApply = time.Since(t2)
		// Metrics-only updates that came sooner than coalescing allows
		// after the first import wait for the graph's flush to become
		// events, and health is cached by event id: wait out the interval
		// (batches come 5 s apart) and flush, as the graph's tick does.
		time.Sleep(graph.DefaultConfig().CoalesceInterval)
		g.Flush()
		c2, t3 := processCPU(), time.Now()
		fig.warmRanking = g.Health()
		fig.healthWarm, fig.healthWarmCPU = time.Since(t3), processCPU()-c2
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	if ms1.HeapAlloc > ms0.HeapAlloc {
		fig.heapBytes = ms1.HeapAlloc - ms0.HeapAlloc
	}
	snap := g.Snapshot()
	fig.routes, fig.links = len(snap.Routes), len(snap.Links)
	fig.precision1, fig.f1, fig.falseAlarms = score(fig.ranking, lossy)
	if withAPI {
		cfg := api.DefaultConfig()
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		srv, err := api.New(cfg, api.Deps{Graph: graph.New(graph.DefaultConfig()), Aggregator: g})
		if err != nil {
			return fig, err
		}
		ts := httptest.NewServer(srv.Handler())
		defer ts.Close()
		t2 := time.Now()
		resp, err := http.Get(ts.URL + "/v1/aggregator/graph/edges/health?top=" + strconv.Itoa(20))
		if err != nil {
			return fig, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fig, fmt.Errorf("edges/health: %s", resp.Status)
		}
		fig.healthLatency = time.Since(t2)
	}
	runtime.KeepAlive(g)
	return fig, nil
}

// score: precision@1 is 1 when the top row is a faulty link; F1 compares
// the links the estimator calls faulty with the true set; alarms counts
// the faulty or suspect links that have no fault.
func score(rows []graph.LinkHealth, lossy map[graph.LinkID]float64) (p1, f1 float64, alarms int) {
	if len(rows) > 0 {
		if _, ok := lossy[graph.LinkID{Src: rows[0].Src, Dst: rows[0].Dst}]; ok {
			p1 = 1
		}
	}
	tp, fp := 0, 0
	for _, r := range rows {
		_, bad := lossy[graph.LinkID{Src: r.Src, Dst: r.Dst}]
		if !bad && (r.Verdict == graph.VerdictFaulty || r.Verdict == graph.VerdictSuspect) {
			alarms++
		}
		if r.Verdict != graph.VerdictFaulty {
			continue
		}
		if bad {
			tp++
		} else {
			fp++
		}
	}
	fn := len(lossy) - tp
	if tp == 0 {
		return p1, 0, alarms
	}
	return p1, 2 * float64(tp) / float64(2*tp+fp+fn), alarms
}
