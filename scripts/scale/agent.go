package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/mapper"
	"github.com/dnms/dnms/internal/pinger"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/plan/simclos"
	"github.com/dnms/dnms/internal/probe"
)

// simTracer answers trace probes from the simulated fabric at once and
// counts who answered: routers' answers are the TTL-expired load. With host
// set, agents live on other addresses (loopback) and host maps them to
// their fabric hosts; the peer answers as itself.
type simTracer struct {
	f      *simclos.Fabric
	self   netip.Addr
	host   map[netip.Addr]netip.Addr
	probes atomic.Int64
	mu     sync.Mutex
	byTTL  map[int]int64 // router answers by TTL
}

func (t *simTracer) fabricAddr(a netip.Addr) netip.Addr {
	if h, ok := t.host[a]; ok {
		return h
	}
	return a
}

func (t *simTracer) ProbeTTLs(ctx context.Context, peer netip.Addr, port uint16, ttls []int) (mapper.ProbeResult, error) {
	path := t.f.Path(t.fabricAddr(t.self), t.fabricAddr(peer), port)
	var res mapper.ProbeResult
	for _, ttl := range ttls {
		res.ProbesSent++
		a := mapper.TTLAnswer{TTL: ttl}
		if ttl >= len(path)-1 {
			a.Hop, a.Dest = graph.Hop{Addr: peer}, true
		} else {
			a.Hop = graph.Hop{Addr: path[ttl]}
			t.mu.Lock()
			t.byTTL[ttl]++
			t.mu.Unlock()
		}
		res.Answers = append(res.Answers, a)
		if a.Dest {
			break
		}
	}
	t.probes.Add(int64(res.ProbesSent))
	return res, nil
}

// oneGateway is a host's FIB: a single next hop to every peer.
type oneGateway struct{}

func (oneGateway) NextHops(netip.Addr) (int, error) { return 1, nil }

// simProber answers pings at once with a synthetic RTT.
type simProber struct {
	sent atomic.Int64
	res  chan probe.Result
}

func (p *simProber) Ping(peer netip.Addr, port uint16) (uint64, error) {
	n := p.sent.Add(1)
	select {
	case p.res <- probe.Result{Peer: peer, SrcPort: port, Sample: graph.Sample{Seq: uint64(n), Sent: time.Now(),
		RTT: time.Duration(20+rand.IntN(40)) * time.Microsecond, Source: "ebpf"}}:
	default:
	}
	return uint64(n), nil
}

func (p *simProber) Results() <-chan probe.Result { return p.res }

// agentFigures are one emulated agent's measurements.
type agentFigures struct {
	peers          int
	pingsPerSec    float64 // default: one schedule per (forward, reverse) route pair
	pingsEveryPort float64 // -pingEveryPort, the same routes
	traceProbesSec float64 // steady state (second sweep on)
	sweep          time.Duration
	firstRoute     time.Duration // plan handed over → first route in the graph
	series         int
	heapBytes      uint64
	routerTTL      map[int]float64 // TTL → router answers per second
	routes         int
}

// runAgent emulates one agent with the production mapper, pinger, graph and
// API collector over the simulated fabric: the plan picks its peers, the
// mapper sweeps them under the trace caps (time compressed by speedup),
// the pinger pings their routes for pingFor under -probeRate, and its
// registry is counted.
func runAgent(f *simclos.Fabric, self simclos.Host, members []plan.Member, pc plan.Config, speedup float64, pingFor time.Duration) (agentFigures, error) {
	var fig agentFigures
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := graph.New(graph.DefaultConfig())
	tr := &simTracer{f: f, self: self.Addr, byTTL: make(map[int]int64)}
	mc := mapper.DefaultConfig()
	mc.LocalAddr, mc.Registerer, mc.Logger = self.Addr, reg, log
	mc.FIB = oneGateway{} // a host's default route: one next hop
	mc.Interval = time.Duration(float64(mc.Interval) / speedup)
	mc.TraceRate = plan.NewRate(50 * speedup)
	mc.RouterBudget = plan.NewRouterBudget(500 * speedup) // -traceRouterRate
	mc.RouterBudget.SetMembers(len(members))
	mp, err := mapper.New(mc, tr, g)
	if err != nil {
		return fig, err
	}
	defer mp.Close()
	pc.Self, pc.SelfRack = self.Name, self.Rack
	picks := plan.Select(pc, members, time.Now())
	fig.peers = len(picks)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Run(ctx)
	start := time.Now()
	mp.SetPlan(picks)
	done := make(chan struct{})
	go func() { defer close(done); mp.Run(ctx) }()
	for len(g.RouteKeys()) == 0 {
		time.Sleep(time.Millisecond) // polling the graph: the first route's arrival is the figure
	}
	fig.firstRoute = time.Duration(float64(time.Since(start)) * speedup)
	for mp.Sweeps() < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	fig.sweep = time.Duration(float64(time.Since(start)) * speedup)
	p1, t1 := tr.probes.Load(), time.Now()
	tr.mu.Lock()
	clear(tr.byTTL)
	tr.mu.Unlock()
	for mp.Sweeps() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(t1).Seconds() * speedup
	fig.traceProbesSec = float64(tr.probes.Load()-p1) / el
	fig.routerTTL = make(map[int]float64)
	tr.mu.Lock()
	for ttl, n := range tr.byTTL {
		fig.routerTTL[ttl] = float64(n) / el
	}
	tr.mu.Unlock()
	cancel()
	<-done

	// Ping the mapped routes in real time under -probeRate: first as the
	// agent does by default (one schedule per (forward, reverse) route pair,
	// the reverse routes being what each peer's mapper would answer on
	// /v1/mapper/routes-to), then every port (-pingEveryPort) as the
	// baseline of the same run.
	rev := simReverse{f: f, self: self.Addr}
	if fig.pingsPerSec, err = pingLoad(g, self.Addr, rev, false, reg, log, pingFor); err != nil {
		return fig, err
	}
	// The baseline's pinger registers its series elsewhere: the series
	// figure is the default agent's.
	if fig.pingsEveryPort, err = pingLoad(g, self.Addr, rev, true, prometheus.NewRegistry(), log, pingFor); err != nil {
		return fig, err
	}

	acfg := api.DefaultConfig()
	acfg.Registerer, acfg.Gatherer, acfg.Logger = reg, reg, log
	if _, err := api.New(acfg, api.Deps{Graph: g}); err != nil {
		return fig, fmt.Errorf("api: %w", err)
	}
	fig.series, err = countSeries(reg)
	if err != nil {
		return fig, err
	}
	fig.routes = len(g.Snapshot().Routes)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	if ms1.HeapAlloc > ms0.HeapAlloc {
		fig.heapBytes = ms1.HeapAlloc - ms0.HeapAlloc
	}
	runtime.KeepAlive(g)
	runtime.KeepAlive(mp)
	return fig, nil
}

// countSeries counts the series a Prometheus scrape of reg stores: one per
// sample line of the text format (a classic histogram is its buckets, +Inf,
// _sum and _count).
func countSeries(reg prometheus.Gatherer) (int, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, mf := range mfs {
		before := n
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				n += len(h.GetBucket()) + 3
				continue
			}
			if s := m.GetSummary(); s != nil {
				n += len(s.GetQuantile()) + 2
				continue
			}
			n++
		}
		if os.Getenv("DNMS_SCALE_SERIES") != "" {
			fmt.Fprintf(os.Stderr, "%6d %s\n", n-before, mf.GetName())
		}
	}
	return n, nil
}

// simReverse is what each peer's /v1/mapper/routes-to would answer: the
// route its acks to self take from each source port, from the simulated
// fabric (the peer's mapper traces exactly the ack's 5-tuple).
type simReverse struct {
	f    *simclos.Fabric
	self netip.Addr
}

func (r simReverse) ReverseOf(k graph.RouteKey) (string, bool) {
	return graph.RouteID(r.f.Route(k.Dst, r.self, k.SrcPort)), true
}

// pingLoad runs a production pinger over g's routes for pingFor under
// -probeRate and returns the pings it sent per second.
func pingLoad(g *graph.Graph, self netip.Addr, rev pinger.ReverseIDs, everyPort bool, reg prometheus.Registerer, log *slog.Logger, pingFor time.Duration) (float64, error) {
	pr := &simProber{res: make(chan probe.Result, 4096)}
	pcfg := pinger.DefaultConfig()
	pcfg.Local, pcfg.Registerer, pcfg.Logger, pcfg.Rate = self, reg, log, plan.NewRate(1000)
	pcfg.Reverse, pcfg.EveryPort = rev, everyPort
	pg, err := pinger.New(pcfg, pr, g, g)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), pingFor+pcfg.RouteInterval)
	defer cancel()
	go g.Run(ctx)
	go pg.Run(ctx)
	time.Sleep(pcfg.RouteInterval) // every schedule's random phase has passed
	s0, p0 := pr.sent.Load(), time.Now()
	<-ctx.Done()
	return float64(pr.sent.Load()-s0) / time.Since(p0).Seconds(), nil
}
