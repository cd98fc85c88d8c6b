// Command scale is dnms's scale emulation harness (make bench, section
// "scale"). For each cluster size N it builds a simulated Clos
// (internal/plan/simclos) and runs the production code over it:
//
//   - per agent (a few sampled agents): the probe plan (internal/plan), the
//     mapper sweeping the plan's peers under -traceRate and the per-router
//     budget (time compressed by -speedup; traces answered by the simulated
//     fabric), the pinger pinging the mapped routes in real time under
//     -probeRate, the agent's Prometheus registry (mapper, pinger and the
//     API's graph collector at the default -metricsDetail=peer);
//   - cluster: TTL-expired answers per router, from the sampled agents'
//     answers per TTL spread over every agent's routes;
//   - aggregator: every agent's routes imported into one graph the way the
//     aggregator merges member streams (graph.ImportRoute), the health
//     ranking and GET /v1/aggregator/graph/edges/health through the real API;
//   - localization: precision@1 and F1 with the plan's sampled peers and with
//     a full mesh, on the same fault sets (5% loss on 1 or 3 router links),
//     and the faulty or suspect verdicts on a healthy fabric; every link has
//     a background loss drawn once from [0, -noise). Both route sets go to
//     the estimator directly (mesh.go: the aggregator's health input without
//     its graph, checked against aggregate by TestMeshMatchesAggregate), so
//     a full mesh fits up to -fullMeshMax hosts.
//
// Routes and samples are synthetic; what is emulated is said in the README's
// scale section. Usage: go run ./scripts/scale [-n 100,300,1000].
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/plan/simclos"
)

func main() {
	var (
		sizes       = flag.String("n", "100,300,1000", "comma-separated cluster sizes")
		speedup     = flag.Float64("speedup", 10, "time compression of the emulated sweeps (rates × speedup, intervals ÷ speedup)")
		agents      = flag.Int("agents", 2, "agents emulated in full per size")
		trials      = flag.Int("trials", 2, "fault sets per fault count for the localization figures (0 skips them)")
		fullMeshMax = flag.Int("fullMeshMax", 1000, "largest N for which the full-mesh localization baseline is computed (≈ 4 GiB at 1000)")
		pingFor     = flag.Duration("pingFor", 3*time.Second, "how long each emulated agent pings")
		liveMax     = flag.Int("liveMax", 100, "agents run live (memberlist, HTTP/SSE, aggregator) per size; 0 skips")
		liveFor     = flag.Duration("liveFor", 60*time.Second, "how long the live agents run")
		noise       = flag.Float64("noise", 0.0001, "every link's background loss, fixed per link and trial, in [0, noise)")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		memProfile  = flag.String("memprofile", "", "write a heap profile at the end of each live run to this file")
	)
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "scale: -cpuprofile: %v\n", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
		// An interrupted run still leaves its profile.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() {
			<-sig
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(130)
		}()
	}
	heapProfile = *memProfile
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 10 {
			fmt.Fprintf(os.Stderr, "scale: -n %q: want sizes of at least 10\n", s)
			os.Exit(2)
		}
		if err := runSize(n, *speedup, *agents, *trials, *fullMeshMax, *pingFor, *liveMax, *liveFor, *noise); err != nil {
			fmt.Fprintf(os.Stderr, "scale: N=%d: %v\n", n, err)
			pprof.StopCPUProfile()
			os.Exit(1)
		}
	}
}

// shape returns a Clos of about n hosts: two tiers up to 400 hosts, then
// pods of 5 ToRs under 4 aggregation routers.
func shape(n int) simclos.Fabric {
	switch {
	case n <= 150:
		return simclos.Fabric{Spines: 4, ToRs: max(n/20, 1), HostsPerToR: 20}
	case n <= 400:
		return simclos.Fabric{Spines: 4, ToRs: max(n/30, 1), HostsPerToR: 30}
	default:
		return simclos.Fabric{Pods: max(n/200, 1), ToRs: 5, Aggs: 4, Spines: 8, HostsPerToR: 40}
	}
}

func runSize(n int, speedup float64, agents, trials, fullMeshMax int, pingFor time.Duration, liveMax int, liveFor time.Duration, noise float64) error {
	f := simclos.New(shape(n))
	members := make([]plan.Member, len(f.Hosts))
	for i, h := range f.Hosts {
		members[i] = plan.Member{Name: h.Name, Addr: h.Addr, Rack: h.Rack}
	}
	pc := plan.DefaultConfig()
	now := time.Now()
	fmt.Printf("\nN=%d hosts: %d pods, %d ToRs, %d spines, %d links; -pingPeers %d, 11 source ports\n",
		len(f.Hosts), f.Pods, len(f.ToRAddr), len(f.Spine), len(f.Links()), pc.Budget)

	// Per agent.
	step := max(len(f.Hosts)/max(agents, 1), 1)
	perTTL := make(map[int]float64)
	fmt.Printf("  %-6s %5s %8s %10s %11s %10s %10s %7s %8s %7s\n", "agent", "peers", "routes", "pings/s", "every port", "trace/s", "sweep", "join→1st", "series", "heap")
	for i := 0; i < agents && i*step < len(f.Hosts); i++ {
		h := f.Hosts[i*step]
		fig, err := runAgent(f, h, members, pc, speedup, pingFor)
		if err != nil {
			return err
		}
		for t, v := range fig.routerTTL {
			perTTL[t] += v / float64(agents)
		}
		fmt.Printf("  %-6s %5d %8d %10.0f %11.0f %10.1f %10s %7s %8d %6.1fM\n", h.Name, fig.peers, fig.routes, fig.pingsPerSec,
			fig.pingsEveryPort, fig.traceProbesSec, fig.sweep.Round(100*time.Millisecond), fig.firstRoute.Round(10*time.Millisecond), fig.series,
			float64(fig.heapBytes)/(1<<20))
	}

	if liveMax > 0 {
		if err := runLive(f, min(n, liveMax), liveFor); err != nil {
			return err
		}
	}

	// Cluster and aggregator, with the plan's sampled peers.
	sampledPlan := planAll(f, members, pc, now)
	sampled := routesOf(f, sampledPlan, 11)
	mx, p99, top := routerLoad(sampled, perTTL)
	ttls := make([]string, 0, len(perTTL))
	for t := 1; t <= len(perTTL); t++ {
		ttls = append(ttls, fmt.Sprintf("%d:%.1f", t, perTTL[t]))
	}
	fmt.Printf("  cluster: TTL-expired answers per router per second: max %.1f (%s), p99 %.1f; per agent by TTL %s\n",
		mx, top, p99, strings.Join(ttls, " "))
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	agg, err := aggregate(sampled, faults(f, 1, 0.05, rng), noise, 1, rng, true)
	if err != nil {
		return err
	}
	fmt.Printf("  aggregator: %d routes, %d links, heap %.0f MiB, merge %s, health %s, CPU %s, GET edges/health %s\n",
		agg.routes, agg.links, float64(agg.heapBytes)/(1<<20), agg.merge.Round(time.Millisecond),
		agg.health.Round(time.Millisecond), agg.cpu.Round(time.Millisecond), agg.healthLatency.Round(time.Millisecond))
	wp1, wf1, _ := score(agg.warmRanking, agg.lossy)
	fmt.Printf("  aggregator, steady state: one batch round (every route's window moved by 5 of 100 samples; %d routes changed) applied in %s; health after it %s (CPU %s, the estimator warm); precision@1 %.2f F1 %.2f\n",
		agg.batchRoutes, agg.batchApply.Round(time.Millisecond), agg.healthWarm.Round(100*time.Microsecond), agg.healthWarmCPU.Round(100*time.Microsecond), wp1, wf1)

	// Localization: the same fault sets for the sampled plan and a full
	// mesh, both through the mesh set (the estimator the aggregator's
	// health runs, on the same routes and counts as aggregate: see
	// TestMeshMatchesAggregate).
	if err := printLocalization(f, members, pc, sampledPlan, now, trials, fullMeshMax, noise); err != nil {
		return err
	}
	return nil
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
