package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/mapper"
	"github.com/dnms/dnms/internal/pinger"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/plan/simclos"
	"github.com/dnms/dnms/internal/probe"
)

// aggregateInterval is each live agent's -aggregateInterval: how often it
// sends the aggregator one batch of route metrics (0: every update).
var aggregateInterval = flag.Duration("aggregateInterval", 5*time.Second, "live agents' -aggregateInterval (0: a route-update event per metrics change, as before batching)")

// liveAgent is one emulated agent: real memberlist, plan runner, mapper,
// pinger, graph and HTTP/SSE server on its own loopback address.
type liveAgent struct {
	name       string
	addr       netip.Addr
	g          *graph.Graph
	started    time.Time
	firstRoute time.Duration
}

// runLive starts n agents (agent 0 also the aggregator, as with
// `dnms -aggregator`) on 127.1.x.y, lets them join and map for runFor, and
// reports membership, join → first route and the aggregator's merge.
func runLive(f *simclos.Fabric, n int, runFor time.Duration) error {
	n = min(n, len(f.Hosts))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	port := 20000 + rand.IntN(10000)
	loop := make(map[netip.Addr]netip.Addr, n)
	agents := make([]*liveAgent, n)
	for i := range agents {
		a := netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(i%250 + 1)})
		loop[a] = f.Hosts[i].Addr
		agents[i] = &liveAgent{name: fmt.Sprintf("a%d", i), addr: a, g: graph.New(graph.DefaultConfig())}
	}
	seed := net.JoinHostPort(agents[0].addr.String(), strconv.Itoa(port))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	goRun := func(fn func(context.Context) error) {
		wg.Add(1)
		go func() { defer wg.Done(); fn(ctx) }()
	}

	aggGraph := graph.New(graph.DefaultConfig())
	aggReg := prometheus.NewRegistry()
	acfg := aggregator.DefaultConfig()
	acfg.Logger, acfg.Registerer = log, aggReg
	agg, err := aggregator.New(acfg, aggGraph)
	if err != nil {
		return err
	}
	goRun(aggGraph.Run)
	goRun(agg.Run)

	var clusters []*cluster.Cluster
	cpu0, t0 := processCPU(), time.Now()
	for i, a := range agents {
		reg := prometheus.NewRegistry()
		mc := mapper.DefaultConfig()
		mc.LocalAddr, mc.Logger, mc.Registerer = a.addr, log, reg
		mc.TraceRate, mc.RouterBudget, mc.FIB = plan.NewRate(50), plan.NewRouterBudget(500), oneGateway{}
		mp, err := mapper.New(mc, &simTracer{f: f, self: a.addr, host: loop, byTTL: make(map[int]int64)}, a.g)
		if err != nil {
			return err
		}
		pc := plan.DefaultConfig()
		pc.Self = a.name
		runner, err := plan.NewRunner(pc, a.addr, mp, log)
		if err != nil {
			return err
		}
		runner.ShareRouterBudget(mc.RouterBudget)
		pcfg := pinger.DefaultConfig()
		pcfg.Local, pcfg.Logger, pcfg.Registerer, pcfg.Rate = a.addr, log, reg, plan.NewRate(1000)
		// A tenth of the ping rate: 100 agents' synthetic pings must fit in
		// this process next to everything else.
		pcfg.RouteInterval = 10 * time.Second
		pg, err := pinger.New(pcfg, &simProber{res: make(chan probe.Result, 4096)}, a.g, a.g)
		if err != nil {
			return err
		}
		srvCfg := api.DefaultConfig()
		srvCfg.Addr, srvCfg.Logger = net.JoinHostPort(a.addr.String(), strconv.Itoa(port+1)), log
		srvCfg.BatchInterval, srvCfg.BatchPhase = *aggregateInterval, api.BatchPhase(a.name, *aggregateInterval)
		srv, err := api.New(srvCfg, api.Deps{Graph: a.g})
		if err != nil {
			return err
		}
		cc := cluster.DefaultConfig()
		cc.BindAddr, cc.AdvertiseAddr, cc.Port, cc.NodeName = a.addr, a.addr, port, a.name
		cc.HTTPPort, cc.Logger, cc.Registerer = uint16(port+1), log, reg
		if i > 0 {
			cc.Seeds = []string{seed}
		} else {
			cc.Role = cluster.RoleAggregator
		}
		cl, err := cluster.New(cc)
		if err != nil {
			return err
		}
		cl.AddHandler(liveHandler{runner})
		if i == 0 {
			cl.AddHandlerWithSelf(agg)
		}
		clusters = append(clusters, cl)
		a.started = time.Now()
		for _, fn := range []func(context.Context) error{a.g.Run, srv.Run, mp.Run, runner.Run, pg.Run, cl.Run} {
			goRun(fn)
		}
	}

	fmt.Printf("  live: %d agents started in %s\n", n, time.Since(t0).Round(time.Millisecond))

	// Membership, first routes and the aggregator's merge, polled.
	var members time.Duration
	deadline := t0.Add(runFor)
	for time.Now().Before(deadline) {
		all := true
		for _, a := range agents {
			if a.firstRoute == 0 {
				if len(a.g.RouteKeys()) > 0 {
					a.firstRoute = time.Since(a.started)
				} else {
					all = false
				}
			}
		}
		if members == 0 && len(clusters[n-1].Members()) >= n-1 && len(clusters[0].Members()) >= n-1 {
			members = time.Since(t0)
		}
		if all && members > 0 && time.Since(t0) > runFor/2 {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling the emulation's state
	}
	var firsts []time.Duration
	routes := 0
	for _, a := range agents {
		if a.firstRoute > 0 {
			firsts = append(firsts, a.firstRoute)
		}
		routes += len(a.g.Snapshot().Routes)
	}
	slices.Sort(firsts)
	el := time.Since(t0)
	cpu := processCPU() - cpu0
	aggRoutes := len(aggGraph.Snapshot().Routes)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("  live (%d agents on 127.1.x.y: memberlist, HTTP/SSE, plan, mapper, pinger; agent a0 aggregates): members converged %s;"+
		" join → first route p50 %s max %s (%d/%d agents)\n", n, members.Round(100*time.Millisecond),
		pct(firsts, 0.5), pct(firsts, 1), len(firsts), n)
	fmt.Printf("    after %s (-aggregateInterval %s): agents hold %d routes, aggregator %d; aggregator events %.0f (route metrics from batches %.0f), resyncs %.0f; process CPU %.0f%% of a core, heap %d MiB\n",
		el.Round(time.Second), *aggregateInterval, routes, aggRoutes,
		sumCounter(aggReg, "dnms_aggregator_events_total"), sumCounter(aggReg, "dnms_aggregator_batch_routes_total"), sumCounter(aggReg, "dnms_aggregator_resyncs_total"),
		100*cpu.Seconds()/el.Seconds(), ms.HeapAlloc>>20)
	return nil
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(int(q*float64(len(ds))), len(ds)-1)].Round(10 * time.Millisecond)
}

func sumCounter(g prometheus.Gatherer, name string) float64 {
	n, _ := testutil.GatherAndCount(g, name)
	if n == 0 {
		return 0
	}
	mfs, _ := g.Gather()
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue()
		}
	}
	return v
}

type liveHandler struct{ r *plan.Runner }

func (h liveHandler) PeerJoin(p cluster.Peer)  { h.r.Join(p.Name, p.Addr) }
func (h liveHandler) PeerLeave(p cluster.Peer) { h.r.Leave(p.Name) }
