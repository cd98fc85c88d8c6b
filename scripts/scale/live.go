package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	httppprof "net/http/pprof"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/prometheus/client_golang/prometheus"

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

// Emulation-only knobs of the live agents: N agents share one process, so
// what one host does alone is done N times here.
var (
	gossipScale   = flag.Float64("gossipScale", 1, "emulation only: the live agents' memberlist probe interval and timeout, push-pull interval and TCP timeout × this (1: memberlist's LAN defaults; the gossip interval is not scaled)")
	liveMaxRSS    = flag.Uint64("liveMaxRSS", 12<<10, "stop the live agents early when the process's RSS passes this many MiB (the VM is shared)")
	livePing      = flag.Duration("livePingInterval", 10*time.Second, "emulation only: the live agents' ping interval per route (-pingRouteInterval; production 1s), and a tenth of it between pinger visits (production 100ms)")
	liveCompress  = flag.Bool("liveCompress", true, "emulation only: false turns the live agents' memberlist compression off (production keeps it on: it halves gossip bytes on a real network; on loopback it only costs CPU)")
	livePprof     = flag.String("livePprof", "", "serve net/http/pprof on this address during the live run (e.g. 127.0.0.1:6060), to profile a run that does not finish")
	livePushPull  = flag.Duration("livePushPull", 0, "emulation only: the live agents' memberlist push-pull interval before memberlist's cluster-size factor (0: 30s × -gossipScale); push-pull repairs the joins gossip missed")
	livePlanGap   = flag.Duration("livePlanGap", time.Second, "emulation only: the least time between two plan updates woken by membership (production 1s; each is an O(N) plan.Select)")
	liveTraceRate = flag.Float64("liveTraceRate", 50, "emulation only: the live agents' -traceRate, trace probes/s per agent (production 50; sweeps take 50/this times longer)")
)

// liveAgent is one emulated agent: real memberlist, plan runner, mapper,
// pinger, graph and HTTP/SSE server on its own loopback address.
type liveAgent struct {
	name   string
	addr   netip.Addr
	g      *graph.Graph
	mp     *mapper.Mapper
	runner *plan.Runner
	reg    *prometheus.Registry
	// creg holds the cluster's metrics alone: read at the end for 1 000
	// agents, a whole agent's registry took minutes to gather.
	creg    *prometheus.Registry
	peers   atomic.Int64 // members this agent's handler was told of
	started time.Time
	// Set by the watcher: nanoseconds since started.
	firstRoute, swept, converged atomic.Int64
	// Read by the watcher at the end.
	routes int
	fails  float64
}

// watch records when the agent first sees all n-1 others, holds its
// first route, and finishes a mapper sweep (every port to every planned
// peer) that ended after it saw every member; when finish closes it reads
// the agent's routes and the members its gossip declared dead.
func (a *liveAgent) watch(n int, finish <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sweepsAtConverged := -1
	for {
		select {
		case <-finish:
			a.routes = a.g.Size().Routes
			a.fails = sumCounter(a.creg, "dnms_cluster_events_total", "fail")
			return
		case <-tick.C:
		}
		now := int64(time.Since(a.started))
		if a.converged.Load() == 0 && int(a.peers.Load()) >= n-1 {
			a.converged.Store(now)
		}
		if a.firstRoute.Load() == 0 && a.g.Size().Routes > 0 {
			a.firstRoute.Store(now)
		}
		if a.converged.Load() > 0 && a.swept.Load() == 0 {
			if s := a.mp.Sweeps(); sweepsAtConverged < 0 {
				sweepsAtConverged = s
			} else if s > sweepsAtConverged {
				a.swept.Store(now)
			}
		}
	}
}

// liveFigures are what runLive measured; durations are wall time in the
// emulation (membership ones in rounds slowed by -gossipScale).
type liveFigures struct {
	start                          time.Duration // starting every agent
	converged                      time.Duration // t0 → every agent sees every other
	convergedAfterLast             time.Duration // last agent started → every agent sees every other
	firsts, sweeps, joins          []time.Duration
	seeAll, fewest                 int // agents that see all n-1 others at the end; the fewest others one sees
	suspects, fails                float64
	routes, aggRoutes, streams     int
	events, batched, resyncs       float64
	health, healthGet, cached      time.Duration
	healthCPU                      time.Duration
	cpu, elapsed                   time.Duration
	heap, rss, peakRSS, goroutines uint64
}

// runLive starts n agents (agent 0 also the aggregator, as with
// `dnms -aggregator`) on 127.1.x.y, lets them join and map for runFor, and
// reports membership, join → first route, sweeps and the aggregator.
func runLive(f *simclos.Fabric, n int, runFor time.Duration) error {
	n = min(n, len(f.Hosts))
	raiseFileLimit(uint64(8*n + 1024))
	if *livePprof != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		srv := &http.Server{Addr: *livePprof, Handler: mux}
		go srv.ListenAndServe()
		defer srv.Close()
	}
	suspects := &countingHandler{}
	log := slog.New(suspects)
	port := 20000 + rand.IntN(10000)
	loop := make(map[netip.Addr]netip.Addr, n)
	agents := make([]*liveAgent, n)
	for i := range agents {
		a := netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(i%250 + 1)})
		loop[a] = f.Hosts[i].Addr
		agents[i] = &liveAgent{name: fmt.Sprintf("a%d", i), addr: a, g: graph.New(graph.DefaultConfig())}
	}
	seed := net.JoinHostPort(agents[0].addr.String(), strconv.Itoa(port))
	// Every agent has a root context of its own, as a process would:
	// contexts derived from one shared root all lock its list of children,
	// and 1 000 agents' traces contended for that one mutex.
	var cancels []context.CancelFunc
	var wg sync.WaitGroup
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
		wg.Wait()
	}()
	// Goroutines carry a pprof label, so that -cpuprofile splits the CPU by
	// part (go tool pprof -tags): the aggregator's from the agents' gossip,
	// pinger, mapper, graph, API and plan. Timer callbacks and GC carry none.
	newRoot := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		return ctx
	}
	goRun := func(ctx context.Context, role string, fn func(context.Context) error) {
		wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("role", role), func(ctx context.Context) { defer wg.Done(); fn(ctx) })
	}
	aggCtx := newRoot()

	aggGraph := graph.New(graph.DefaultConfig())
	aggReg := prometheus.NewRegistry()
	acfg := aggregator.DefaultConfig()
	acfg.Logger, acfg.Registerer = log, aggReg
	agg, err := aggregator.New(acfg, aggGraph)
	if err != nil {
		return err
	}
	goRun(aggCtx, "aggregator", aggGraph.Run)
	goRun(aggCtx, "aggregator", agg.Run)

	// Every agent is built first and then all are started in one quick
	// loop: started one by one, the last ones were built by a goroutine
	// among thousands of running agents' (minutes at N = 1 000).
	built := time.Now()
	launch := make([]func(), n)
	for i, a := range agents {
		ctx := newRoot()
		a.reg, a.creg = prometheus.NewRegistry(), prometheus.NewRegistry()
		mc := mapper.DefaultConfig()
		mc.LocalAddr, mc.Logger, mc.Registerer = a.addr, log, a.reg
		mc.TraceRate, mc.RouterBudget, mc.FIB = plan.NewRate(*liveTraceRate), plan.NewRouterBudget(500), oneGateway{}
		mp, err := mapper.New(mc, &simTracer{f: f, self: a.addr, host: loop, byTTL: make(map[int]int64)}, a.g)
		if err != nil {
			return err
		}
		a.mp = mp
		pc := plan.DefaultConfig()
		pc.Self = a.name
		runner, err := plan.NewRunner(pc, a.addr, mp, log)
		if err != nil {
			return err
		}
		a.runner = runner
		runner.SetUpdateGap(*livePlanGap)
		runner.ShareRouterBudget(mc.RouterBudget)
		pcfg := pinger.DefaultConfig()
		pcfg.Local, pcfg.Logger, pcfg.Registerer, pcfg.Rate = a.addr, log, a.reg, plan.NewRate(1000)
		// Pings slowed (-livePingInterval): N agents' synthetic pings must
		// fit in this process next to everything else.
		pcfg.RouteInterval, pcfg.PeerInterval = *livePing, *livePing/10
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
		cc.HTTPPort, cc.Logger, cc.Registerer = uint16(port+1), log, a.creg
		cc.Tune = tuneGossip(*gossipScale, *liveCompress, *livePushPull)
		if i > 0 {
			cc.Seeds = []string{seed}
		} else {
			cc.Role = cluster.RoleAggregator
		}
		cl, err := cluster.New(cc)
		if err != nil {
			return err
		}
		cl.AddHandler(liveHandler{a})
		if i == 0 {
			cl.AddHandlerWithSelf(agg)
		}
		launch[i] = func() {
			a.started = time.Now()
			goRun(ctx, "graph", a.g.Run)
			goRun(ctx, "api", srv.Run)
			goRun(ctx, "mapper", mp.Run)
			goRun(ctx, "plan", runner.Run)
			goRun(ctx, "pinger", pg.Run)
			goRun(ctx, "memberlist", cl.Run)
		}
	}
	buildTime := time.Since(built)
	cpu0, t0 := processCPU(), time.Now()
	for _, start := range launch {
		start()
	}
	fig := liveFigures{fewest: n}
	fig.start = time.Since(t0)
	lastStart := agents[n-1].started
	fmt.Printf("  live: %d agents built in %s, started in %s (-gossipScale %g, -livePingInterval %s, -liveCompress %t, -liveTraceRate %g, -livePlanGap %s, -livePushPull %s, GOGC %q, GOMEMLIMIT %q)\n",
		n, buildTime.Round(time.Millisecond), fig.start.Round(time.Millisecond), *gossipScale, *livePing, *liveCompress, *liveTraceRate, *livePlanGap, *livePushPull, os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT"))

	// Membership, first routes and sweeps: each agent has a watcher, so a
	// busy agent's locks never hold up the others' readings.
	finish := make(chan struct{})
	var watchers sync.WaitGroup
	for _, a := range agents {
		watchers.Go(func() { a.watch(n, finish) })
	}
	deadline, lastProgress := t0.Add(runFor), time.Now()
	for time.Now().Before(deadline) {
		conv, first, swept, fewest := 0, 0, 0, n
		for _, a := range agents {
			fewest = min(fewest, int(a.peers.Load()))
			conv += b2i(a.converged.Load() > 0)
			first += b2i(a.firstRoute.Load() > 0)
			swept += b2i(a.swept.Load() > 0)
		}
		if fig.converged == 0 && conv == n {
			fig.converged, fig.convergedAfterLast = time.Since(t0), time.Since(lastStart)
		}
		if conv == n && swept == n && time.Since(t0) > runFor/2 {
			break
		}
		if rss := procStatus("VmRSS") >> 20; rss > *liveMaxRSS {
			fmt.Printf("    stopped after %s: RSS %d MiB > -liveMaxRSS %d\n", time.Since(t0).Round(time.Second), rss, *liveMaxRSS)
			break
		}
		if time.Since(lastProgress) >= 10*time.Second {
			lastProgress = time.Now()
			fmt.Fprintf(os.Stderr, "    [%s] of %d agents: %d see all (fewest seen %d), %d have a route, %d swept; CPU so far %s, RSS %d MiB, %d goroutines\n",
				time.Since(t0).Round(time.Second), n, conv, fewest, first, swept, processCPU().Round(time.Second), procStatus("VmRSS")>>20, runtime.NumGoroutine())
		}
		time.Sleep(time.Second) // polling the watchers' readings
	}
	close(finish)
	watchers.Wait()
	for _, a := range agents {
		for _, r := range []struct {
			d  time.Duration
			to *[]time.Duration
		}{{time.Duration(a.firstRoute.Load()), &fig.firsts}, {time.Duration(a.swept.Load()), &fig.sweeps}, {time.Duration(a.converged.Load()), &fig.joins}} {
			if r.d > 0 {
				*r.to = append(*r.to, r.d)
			}
		}
		fig.seeAll += b2i(int(a.peers.Load()) >= n-1)
		fig.fewest = min(fig.fewest, int(a.peers.Load()))
		fig.routes += a.routes
		fig.fails += a.fails
		fig.streams += b2i(agg.Connected(a.name))
	}
	for _, ds := range [][]time.Duration{fig.firsts, fig.sweeps, fig.joins} {
		slices.Sort(ds)
	}
	fmt.Fprintf(os.Stderr, "    [%s] agents read\n", time.Since(t0).Round(time.Second))
	fig.suspects = float64(suspects.n.Load())
	fig.aggRoutes = aggGraph.Size().Routes
	fig.events = sumCounter(aggReg, "dnms_aggregator_events_total")
	fig.batched = sumCounter(aggReg, "dnms_aggregator_batch_routes_total")
	fig.resyncs = sumCounter(aggReg, "dnms_aggregator_resyncs_total")

	// The aggregator's health ranking and endpoint while the streams run.
	fmt.Fprintf(os.Stderr, "    [%s] polling done; health\n", time.Since(t0).Round(time.Second))
	c0, h0 := processCPU(), time.Now()
	aggGraph.Health()
	fig.health, fig.healthCPU = time.Since(h0), processCPU()-c0
	fmt.Fprintf(os.Stderr, "    [%s] health done; GET\n", time.Since(t0).Round(time.Second))
	if fig.healthGet, fig.cached, err = getHealth(agents[0].g, aggGraph); err != nil {
		return err
	}
	fig.elapsed = time.Since(t0)
	fig.cpu = processCPU() - cpu0
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fig.heap, fig.goroutines = ms.HeapAlloc, uint64(runtime.NumGoroutine())
	fig.rss, fig.peakRSS = procStatus("VmRSS"), procStatus("VmHWM")
	if heapProfile != "" {
		if f, err := os.Create(heapProfile); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	printLive(n, fig)
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func printLive(n int, fig liveFigures) {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Printf("  live (%d agents on 127.1.x.y: memberlist, HTTP/SSE, plan, mapper, pinger; agent a0 aggregates):\n", n)
	all := "not every agent saw every other"
	if fig.converged > 0 {
		all = fmt.Sprintf("every agent saw every other %s after the first start (%s after the last)",
			fig.converged.Round(100*time.Millisecond), fig.convergedAfterLast.Round(100*time.Millisecond))
	}
	fmt.Printf("    membership: %d/%d agents see all %d others at the end (fewest seen: %d); %s; per agent, start → sees all p50 %s p99 %s max %s (%d agents); suspicions %.0f, declared dead %.0f\n",
		fig.seeAll, n, n-1, fig.fewest, all, pct(fig.joins, 0.5), pct(fig.joins, 0.99), pct(fig.joins, 1), len(fig.joins), fig.suspects, fig.fails)
	fmt.Printf("    start → first route p50 %s p99 %s max %s (%d/%d agents); start → swept (a sweep of every port to every planned peer, ended after the agent saw every member) p50 %s p99 %s max %s (%d/%d)\n",
		pct(fig.firsts, 0.5), pct(fig.firsts, 0.99), pct(fig.firsts, 1), len(fig.firsts), n,
		pct(fig.sweeps, 0.5), pct(fig.sweeps, 0.99), pct(fig.sweeps, 1), len(fig.sweeps), n)
	fmt.Printf("    aggregator after %s (-aggregateInterval %s): streams up %d/%d, holds %d of the agents' %d routes; events %.0f (%.0f/s; route metrics from batches %.0f), resyncs %.0f; health %s (CPU %s), GET /v1/aggregator/graph/edges/health %s, again %s\n",
		fig.elapsed.Round(time.Second), *aggregateInterval, fig.streams, n, fig.aggRoutes, fig.routes,
		fig.events, fig.events/fig.elapsed.Seconds(), fig.batched, fig.resyncs, ms(fig.health), ms(fig.healthCPU), ms(fig.healthGet), ms(fig.cached))
	fmt.Printf("    process: CPU %.0f%% of a core (%.2f%% per agent), RSS %d MiB (peak %d MiB, %.1f MiB per agent), heap %d MiB, %d goroutines\n",
		100*fig.cpu.Seconds()/fig.elapsed.Seconds(), 100*fig.cpu.Seconds()/fig.elapsed.Seconds()/float64(n),
		fig.rss>>20, fig.peakRSS>>20, float64(fig.peakRSS)/float64(n)/(1<<20), fig.heap>>20, fig.goroutines)
}

// getHealth serves GET /v1/aggregator/graph/edges/health through the real
// API over agg, twice in a row (the second reads the health cache only if
// no stream event came between).
func getHealth(local, agg *graph.Graph) (first, second time.Duration, err error) {
	cfg := api.DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := api.New(cfg, api.Deps{Graph: local, Aggregator: agg})
	if err != nil {
		return 0, 0, err
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	var ds [2]time.Duration
	for i := range ds {
		t := time.Now()
		resp, err := http.Get(ts.URL + "/v1/aggregator/graph/edges/health?top=20")
		if err != nil {
			return 0, 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("edges/health: %s", resp.Status)
		}
		ds[i] = time.Since(t)
	}
	return ds[0], ds[1], nil
}

// scaleGossip slows memberlist's periodic work k-fold (emulation only: N
// members share one process): the probe interval and timeout (so the
// suspicion timeout, a multiple of the probe interval), push-pull and the
// TCP timeout. The gossip interval stays: gossip only carries broadcasts,
// whose number the joins set, so slowing it spreads the same packets over
// more time and delays convergence without saving CPU.
func scaleGossip(k float64) func(*memberlist.Config) {
	return func(mc *memberlist.Config) {
		if k == 1 {
			return
		}
		for _, d := range []*time.Duration{&mc.ProbeInterval, &mc.ProbeTimeout, &mc.PushPullInterval, &mc.TCPTimeout} {
			*d = time.Duration(float64(*d) * k)
		}
	}
}

// tuneGossip is scaleGossip(k), with compress false memberlist's
// compression off (emulation only: lzw of every packet and its tables were
// a quarter of the live agents' allocations on loopback) and a push-pull
// interval of its own when pushPull is set.
func tuneGossip(k float64, compress bool, pushPull time.Duration) func(*memberlist.Config) {
	return func(mc *memberlist.Config) {
		scaleGossip(k)(mc)
		mc.EnableCompression = mc.EnableCompression && compress
		if pushPull > 0 {
			mc.PushPullInterval = pushPull
		}
	}
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE towards want (capped by the
// hard limit): every agent holds gossip, HTTP and stream sockets.
func raiseFileLimit(want uint64) {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil || rl.Cur >= want {
		return
	}
	rl.Cur = min(want, rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < want {
		fmt.Fprintf(os.Stderr, "scale: open files limited to %d (want %d)\n", rl.Cur, want)
	}
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v << 10
		}
	}
	return 0
}

// countingHandler discards logs but counts memberlist's suspicions
// ("Suspect a12 has failed, no acks received"): with no agent stopped,
// every one is false.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "Suspect ") {
		h.n.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(int(q*float64(len(ds))), len(ds)-1)].Round(10 * time.Millisecond)
}

// sumCounter is the sum of name's series; with labelValue set, only of the
// series that have a label of that value.
func sumCounter(g prometheus.Gatherer, name string, labelValue ...string) float64 {
	mfs, _ := g.Gather()
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := len(labelValue) == 0
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == labelValue[0]
			}
			if match {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

type liveHandler struct{ a *liveAgent }

func (h liveHandler) PeerJoin(p cluster.Peer) { h.a.peers.Add(1); h.a.runner.Join(p.Name, p.Addr) }
func (h liveHandler) PeerLeave(p cluster.Peer) {
	h.a.peers.Add(-1)
	h.a.runner.Leave(p.Name)
}

// heapProfile is -memprofile: where runLive writes a heap profile.
var heapProfile string
