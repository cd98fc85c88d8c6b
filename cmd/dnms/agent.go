package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/mapper"
	"github.com/dnms/dnms/internal/pinger"
	"github.com/dnms/dnms/internal/plan"
)

func defaultLocalIP() (netip.Addr, error) { return cluster.DefaultAddr() }

func newLogger(level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// runAgent wires the components and owns their lifetimes: everything runs
// in one errgroup and stops on SIGINT/SIGTERM (leave the cluster, detach
// eBPF, close streams).
func runAgent(cfg *config) error {
	log := newLogger(cfg.LogLevel)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dnms_build_info", Help: "Always 1; labels say the version and the role.",
	}, []string{"version", "role"})
	reg.MustRegister(buildInfo)
	role := cluster.RoleAgent
	if cfg.Aggregator {
		role = cluster.RoleAggregator
	}
	buildInfo.WithLabelValues(version, role).Set(1)

	_, httpPortStr, _ := net.SplitHostPort(cfg.HTTPAddr)
	httpPort, _ := strconv.Atoi(httpPortStr)

	gcfg := graph.DefaultConfig()
	gcfg.RingSize = cfg.MetricRingSize
	gcfg.Health.SlowMinSeconds = cfg.SlowMinDelay.Seconds()
	gcfg.BaselineWindow = cfg.BaselineWindow
	g := graph.New(gcfg)

	caps := newCaps(cfg.Scale)
	probes, err := startProbes(cfg, log, reg, g, caps.pings)
	if err != nil {
		return err // one line: a refused start says only why
	}
	defer probes.Close()
	cfg.logTrust(log)

	mcfg := mapper.DefaultConfig()
	mcfg.LocalAddr = cfg.GossipAddr
	mcfg.PingPort = cfg.PingPort
	mcfg.SrcPortStart, mcfg.SrcPortEnd = cfg.MapSrcPortStart, cfg.MapSrcPortEnd
	mcfg.Interval = cfg.MapInterval
	mcfg.Registerer, mcfg.Logger = reg, log.With("component", "mapper")
	mcfg.TraceRate, mcfg.RouterBudget = caps.traces, caps.routers
	if table, err := loader.OpenFIB(); err != nil {
		log.Warn("no route lookups: the mapper probes TTL 1 on every port until MDA confirms it", "err", err)
	} else {
		defer table.Close()
		mcfg.FIB = table
	}
	tp, err := startTargets(cfg, log, reg, probes, caps.traces)
	if err != nil {
		return err
	}
	defer tp.Close()
	mp, err := mapper.New(mcfg, probes.eng, tp.sink(g))
	if err != nil {
		return fmt.Errorf("mapper: %w", err)
	}
	defer mp.Close()

	var (
		agg      *aggregator.Aggregator
		aggGraph *graph.Graph
	)
	if cfg.Aggregator {
		aggGraph = graph.New(gcfg)
		acfg := aggregator.DefaultConfig()
		acfg.Token, acfg.Logger, acfg.Registerer = cfg.AggregatorToken, log, reg
		acfg.Trust, acfg.TLS, acfg.Self = cfg.trust(), cfg.ClusterTLS, cfg.NodeName
		acfg.SelfAddr, acfg.Started = cfg.GossipAddr, time.Now()
		acfg.Deltas = cfg.Scale.AggregateDeltas
		if acfg.Self == "" {
			acfg.Self = cluster.DefaultNodeName(cfg.GossipAddr)
		}
		if agg, err = aggregator.New(acfg, aggGraph); err != nil {
			return fmt.Errorf("aggregator: %w", err)
		}
	}

	ccfg := cluster.DefaultConfig()
	ccfg.BindAddr, ccfg.AdvertiseAddr, ccfg.Port = cfg.GossipAddr, cfg.GossipAddr, int(cfg.GossipPort)
	if cfg.Peer != "" {
		ccfg.Seeds = []string{cfg.Peer}
	}
	ccfg.NodeName, ccfg.Role, ccfg.Version = cfg.NodeName, role, version
	ccfg.HTTPPort, ccfg.PingPort, ccfg.GossipKey = uint16(httpPort), cfg.PingPort, cfg.GossipKey
	ccfg.HTTPAddr = cfg.HTTPAdvertise
	ccfg.Logger, ccfg.Registerer = log, reg
	ccfg.StateDir = cfg.StateDir
	ccfg.FailedGrace = cfg.FailedGrace
	ccfg.Reachable = reachable(g, agg, max(5*cfg.PingRouteIntv+cfg.PingTimeout, 3*time.Second))
	cl, err := cluster.New(ccfg)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	planner, err := plan.NewRunner(cfg.Scale.planConfig(cl.Name()), cfg.GossipAddr, mp, log.With("component", "plan"))
	if err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	planner.ShareRouterBudget(caps.routers)
	cl.AddHandler(peerHandler{planner: planner, graph: g, reverse: probes.rev, apis: newPeerAPIs(cfg)})
	if probes.ld != nil && cfg.EBPFReflector && len(cfg.ProbeKey) > 0 {
		cl.AddHandlerWithSelf(newMemberSync(probes.ld, log.With("component", "loader")))
	}
	if agg != nil {
		cl.AddHandlerWithSelf(agg)
	}

	acfg := api.DefaultConfig()
	acfg.Addr, acfg.AllowOrigin, acfg.Token = cfg.HTTPAddr, cfg.HTTPAllowOrigin, cfg.HTTPToken
	acfg.Registerer, acfg.Gatherer, acfg.Logger = reg, reg, log.With("component", "api")
	acfg.MaxConns, acfg.WebConfigFile = cfg.HTTPMaxConns, cfg.WebConfigFile
	if cfg.ClusterTLS != nil {
		acfg.TLS = cfg.ClusterTLS.ServerConfig()
	}
	acfg.RouteMetrics = cfg.Scale.MetricsDetail == "route"
	acfg.BatchInterval = cfg.Scale.AggregateInterval
	acfg.BatchPhase = api.BatchPhase(cl.Name(), cfg.Scale.AggregateInterval)
	deps := api.Deps{
		Graph:          g,
		MapperPeers:    func() any { return mapperPeers(mp, probes.pg) },
		MapperRouteMap: func() any { return mp.RouteMap() },
		MapperRoutesTo: func(peer netip.Addr) any { return mp.RoutesTo(peer) },
		Meta: func() any {
			return healthMeta{Version: version, Role: role, Node: cl.Name(),
				TimeSource: string(probes.source), EBPF: probes.health(), ProbeCaps: caps.status()}
		},
	}
	if aggGraph != nil {
		deps.Aggregator = aggGraph
		deps.AggregatorMembers = func() any { return agg.Status() }
		deps.Discovery = discovery(agg)
	}
	tp.deps(&deps)
	srv, err := api.New(acfg, deps)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}

	if err := cl.Start(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	// Everything privileged is done: eBPF loaded and attached, sockets open.
	if err := dropCapabilities(keptCaps(httpPort, cfg.TargetsFile != ""), log); err != nil {
		log.Warn("capabilities not dropped (a binary built with cgo cannot; build with CGO_ENABLED=0)", "err", err)
	}
	log.Info("dnms started", "version", version, "role", role, "node", cl.Name(),
		"addr", cfg.GossipAddr, "gossipPort", cfg.GossipPort, "pingPort", cfg.PingPort,
		"srcPorts", fmt.Sprintf("%d-%d", cfg.MapSrcPortStart, cfg.MapSrcPortEnd),
		"http", cfg.HTTPAddr, "httpAdvertise", cfg.HTTPAdvertise, "timestamps", probes.source, "seed", cfg.Peer)

	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.Run(ctx) })
	if aggGraph != nil {
		eg.Go(func() error { return aggGraph.Run(ctx) })
		eg.Go(func() error { return agg.Run(ctx) })
	}
	probes.run(ctx, eg)
	eg.Go(func() error { return mp.Run(ctx) })
	tp.run(ctx, eg)
	eg.Go(func() error { return planner.Run(ctx) })
	eg.Go(func() error { return cl.Run(ctx) })
	eg.Go(func() error { return srv.Run(ctx) })
	err = eg.Wait()
	log.Info("dnms stopped", "err", err)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// peerHandler feeds cluster membership to the probe plan, which hands the
// mapper the peers to trace (and so to ping): a joined peer in the plan is
// traced first; a departed peer's routes leave the graph. The cluster logs
// joins and leaves itself. The pinger's reverse route source learns where
// each peer's API is. A peer that restarted without being seen to
// leave keeps its routes, but their rings start over (graph.ResetPeer): the
// pings lost while it was down are not held against the links.
type peerHandler struct {
	planner *plan.Runner
	graph   *graph.Graph
	reverse *pinger.Reverse // nil with -pingEveryPort
	apis    peerAPIs
}

var (
	_ cluster.Handler   = peerHandler{}
	_ cluster.Restarter = peerHandler{}
)

func (h peerHandler) PeerJoin(p cluster.Peer) {
	h.planner.Join(p.Name, p.Addr)
	if api, ok := h.apis.of(p); ok && h.reverse != nil {
		h.reverse.SetPeer(p.Addr, api)
	}
}

func (h peerHandler) PeerLeave(p cluster.Peer) {
	h.planner.Leave(p.Name)
	if h.reverse != nil {
		h.reverse.RemovePeer(p.Addr)
	}
}
func (h peerHandler) PeerRestart(p cluster.Peer) {
	h.graph.ResetPeer(p.Addr, time.Now())
}

// reachable tells the cluster whether a member that gossip declared dead
// still answers: one of our pings to it was answered within window, or,
// on an aggregator, its API stream is up. Such a member is cut off from
// gossip, not gone, and is kept (-failedPeerGrace) so the fault that cut it
// off stays measured; a crashed host answers nothing and is forgotten.
func reachable(g *graph.Graph, agg *aggregator.Aggregator, window time.Duration) func(cluster.Peer) bool {
	return func(p cluster.Peer) bool {
		if last := g.LastAnswer(p.Addr); !last.IsZero() && time.Since(last) < window {
			return true
		}
		return agg != nil && agg.Connected(p.Name)
	}
}

func runHealth(args []string) error {
	return api.RunHealth(args, os.Stdin, os.Stdout, os.Stderr)
}
