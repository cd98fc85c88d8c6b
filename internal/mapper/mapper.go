// Package mapper owns which traces dnms sends when: a breadth-first sweep of
// UDP source ports to every peer (Paris traceroute, one flow per port), the
// MDA stopping rule that says whether the port range was enough to see every
// ECMP path, turning hops into full routes for the graph, and counting path
// changes.
//
// A trace probes only the hops it cannot soundly infer: never past the
// peer's known distance, TTL 1 once per peer and sweep when the FIB has a
// single next hop, and not behind a vertex that MDA node control confirmed
// has a single successor (infer.go); inferred hops are re-probed on a
// rotating subset of ports every sweep. It opens no sockets: a Tracer
// (internal/probe) sends the probes, a FIB answers route lookups and a Sink
// (internal/graph) stores the routes.
package mapper

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/plan"
)

// Tracer sends Paris traceroute probes: for each TTL in ttls, one UDP probe
// from srcPort to peer's ping port (one flow, so every TTL follows one ECMP
// path), returning who answered each probe sent. A TTL above one the peer
// already answered need not be sent. *probe.Engine implements it.
type Tracer interface {
	ProbeTTLs(ctx context.Context, peer netip.Addr, srcPort uint16, ttls []int) (ProbeResult, error)
}

// FIB answers route lookups in the local routing table: how many next hops
// the route towards dst has (1 for a single gateway or a directly connected
// peer, more for a multipath route). An error means unknown.
// *loader.FIB implements it.
type FIB interface {
	NextHops(dst netip.Addr) (int, error)
}

// Sink stores routes. *graph.Graph implements it. SetRoute returns a non-nil
// change when the key's hops differ from the route it had (the graph decides
// what counts as different: one silent hop in an otherwise identical path
// does not).
type Sink interface {
	SetRoute(key graph.RouteKey, hops []graph.Hop) (routeID string, change *graph.PathChange)
	RemoveHost(addr netip.Addr)
}

// Config configures a Mapper. Build it from DefaultConfig.
type Config struct {
	// LocalAddr is this host's probe address: the first hop of every route
	// and the Src of every route key.
	LocalAddr netip.Addr
	// PingPort is the UDP port probes are sent to; the source port range
	// must not contain it.
	PingPort uint16
	// SrcPortStart..SrcPortEnd (inclusive) are the source ports swept, one
	// flow (one potential ECMP path) each.
	SrcPortStart, SrcPortEnd uint16
	// Interval is the pause between two traces inside a sweep.
	Interval time.Duration
	// Jitter spreads each pause uniformly over Interval*(1±Jitter) and, when
	// not 0, the first trace over [0, Interval), so agents don't trace in
	// lockstep.
	Jitter float64
	// MaxTTL and MaxSilent bound one trace (MaxSilent silent hops in a row
	// end it).
	MaxTTL, MaxSilent int
	// TraceTimeout bounds one Trace call.
	TraceTimeout time.Duration
	// Confidence is the MDA confidence level for Peers' coverage verdict
	// and for node control: a (TTL, predecessor) group is confirmed, and
	// its successor inferred instead of probed, once FlowsNeeded(1,
	// Confidence) distinct flows (6 at 95%) showed that one successor and
	// none showed another.
	Confidence float64
	// VerifyEvery is the re-verification period in sweeps: every port is
	// fully probed (no inferred hop) at least once every VerifyEvery sweeps,
	// ports taking turns, besides one port per confirmed group every sweep.
	VerifyEvery int
	// FIB, when set, is asked once per peer and sweep whether the route to
	// the peer has a single next hop: then TTL 1 is probed on one port and
	// reused for the others. nil: TTL 1 is treated like any other TTL.
	FIB FIB
	// Parallel is how many traces to different peers run at once inside a
	// sweep (each pausing Interval after its trace). 1 traces one at a time.
	Parallel int
	// TraceRate, when set, caps the trace probes of every trace
	// (-traceRate); a trace waits for its tokens before each round.
	TraceRate *plan.Rate
	// RouterBudget, when set, caps the TTL-expired answers requested from
	// each router: a round waits until every router expected to answer one
	// of its TTLs (from the port's last route) has a token.
	RouterBudget *plan.RouterBudget
	// Registerer receives the mapper's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger logs path changes and failed traces; nil uses slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of the dnms flags: ping port 33435,
// source ports 33436..33446, 1s between traces.
func DefaultConfig() Config {
	const pingPort = 33435
	return Config{
		PingPort:     pingPort,
		SrcPortStart: pingPort + 1,
		SrcPortEnd:   pingPort + 11,
		Interval:     time.Second,
		Jitter:       0.2,
		MaxTTL:       32,
		MaxSilent:    3,
		TraceTimeout: 10 * time.Second,
		Confidence:   0.95,
		VerifyEvery:  4,
		Parallel:     32,
	}
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case !c.LocalAddr.IsValid():
		return errors.New("mapper: LocalAddr is not set")
	case c.PingPort == 0:
		return errors.New("mapper: PingPort must be in 1-65535")
	case c.SrcPortStart == 0 || c.SrcPortEnd == 0:
		return fmt.Errorf("mapper: source ports %d-%d must be in 1-65535", c.SrcPortStart, c.SrcPortEnd)
	case c.SrcPortEnd < c.SrcPortStart:
		return fmt.Errorf("mapper: source port range end %d is below start %d", c.SrcPortEnd, c.SrcPortStart)
	case c.PingPort >= c.SrcPortStart && c.PingPort <= c.SrcPortEnd:
		return fmt.Errorf("mapper: ping port %d overlaps the source port range %d-%d", c.PingPort, c.SrcPortStart, c.SrcPortEnd)
	case c.Interval <= 0:
		return fmt.Errorf("mapper: Interval %v must be positive", c.Interval)
	case c.Jitter < 0 || c.Jitter >= 1:
		return fmt.Errorf("mapper: Jitter %v must be in [0, 1)", c.Jitter)
	case c.MaxTTL < 1 || c.MaxTTL > 255:
		return fmt.Errorf("mapper: MaxTTL %d must be in 1-255", c.MaxTTL)
	case c.MaxSilent < 1:
		return fmt.Errorf("mapper: MaxSilent %d must be at least 1", c.MaxSilent)
	case c.TraceTimeout <= 0:
		return fmt.Errorf("mapper: TraceTimeout %v must be positive", c.TraceTimeout)
	case !(c.Confidence > 0 && c.Confidence < 1):
		return fmt.Errorf("mapper: Confidence %v must be in (0, 1)", c.Confidence)
	case c.VerifyEvery < 1:
		return fmt.Errorf("mapper: VerifyEvery %d must be at least 1", c.VerifyEvery)
	case c.Parallel < 1:
		return fmt.Errorf("mapper: Parallel %d must be at least 1", c.Parallel)
	}
	return nil
}

// Trace results, the values of the result label of dnms_traces_total.
const (
	ResultReached   = "reached"   // the peer answered: the route was stored
	ResultUnreached = "unreached" // the trace ended without the peer: last good route kept
	ResultError     = "error"     // the tracer failed (socket error, timeout)
)

// portState is what the mapper knows about one (peer, source port) flow.
type portState struct {
	traced     bool        // at least one trace finished
	route      []graph.Hop // last good route, endpoints included; nil if none yet
	routeID    string
	lastTrace  time.Time
	lastResult string
	failures   int // consecutive traces that did not reach the peer
	changes    int
	probesSent int
	inferred   int                // MDA-inferred hops in route
	obs        map[int]netip.Addr // TTL → predecessor of the group holding this port's observation
}

type peerState struct {
	addr      netip.Addr
	reason    plan.Reason // why the plan probes it; "" when added by AddPeer
	ports     map[uint16]*portState
	added     time.Time
	lastSweep time.Time // when the last sweep that traced every port finished them
	sweepMask map[uint16]bool
	changes   int
	// coverageLogged: the first full sweep's coverage verdict was logged.
	coverageLogged bool
	groups         map[groupKey]*group
	fib            fibState
}

// Mapper sweeps source ports to every peer and keeps the graph's routes up
// to date. Its methods are safe for concurrent use.
type Mapper struct {
	cfg    Config
	tracer Tracer
	sink   Sink
	log    *slog.Logger
	clock  clock
	rng    *rand.Rand
	n1     int // FlowsNeeded(1, Confidence): flows that confirm a group
	// afterTrace, if set (tests), is called after each trace, recorded or
	// not.
	afterTrace func(peer netip.Addr, port uint16)

	mu     sync.Mutex
	peers  map[netip.Addr]*peerState
	order  []netip.Addr // this sweep's peer order; new peers are appended
	wake   chan struct{}
	sweeps int

	traces   *prometheus.CounterVec
	changes  *prometheus.CounterVec
	probes   *prometheus.CounterVec
	hops     *prometheus.CounterVec
	routes   *prometheus.GaugeVec
	conf     *prometheus.GaugeVec
	sweepDur prometheus.Gauge
	held     prometheus.Counter
	reg      prometheus.Registerer
	cols     []prometheus.Collector
}

// clock is the mapper's view of time, so tests can run sweeps instantly.
type clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done, returning ctx.Err() then.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// New returns a Mapper that traces with tracer and stores routes in sink.
func New(cfg Config, tracer Tracer, sink Sink) (*Mapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tracer == nil || sink == nil {
		return nil, errors.New("mapper: tracer and sink are required")
	}
	cfg.LocalAddr = cfg.LocalAddr.Unmap()
	m := &Mapper{
		cfg:    cfg,
		tracer: tracer,
		sink:   sink,
		log:    cfg.Logger,
		clock:  realClock{},
		rng:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		n1:     FlowsNeeded(1, cfg.Confidence),
		peers:  make(map[netip.Addr]*peerState),
		wake:   make(chan struct{}, 1),
		traces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_traces_total",
			Help: "Traces sent by the mapper, by peer and result (reached, unreached, error).",
		}, []string{"peer", "result"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_path_changes_total",
			Help: "Re-traces of a (peer, source port) flow that found different hops.",
		}, []string{"peer"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_trace_probes_total",
			Help: "Trace probes sent by the mapper's traces, by peer: every probe, verification ones included.",
		}, []string{"peer"}),
		hops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_mapper_hops_total",
			Help: "Hops of the mapper's traces by how they were learned: probe, mda (inferred from a confirmed MDA group) or fib (TTL 1 reused: single next hop).",
		}, []string{"peer", "source"}),
		routes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnms_mapper_routes",
			Help: "Distinct routes the source port range found to each peer.",
		}, []string{"peer"}),
		conf: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnms_mapper_confident",
			Help: "1 if the source port range saw every ECMP path to the peer at the configured MDA confidence.",
		}, []string{"peer"}),
		sweepDur: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnms_mapper_sweep_duration_seconds",
			Help: "How long the last complete sweep over every peer and source port took.",
		}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_mapper_rate_wait_seconds_total",
			Help: "Time traces waited for -traceRate or a router's TTL-expired budget: when it grows, the caps, not -mapInterval, set the sweep's pace.",
		}),
	}
	if m.log == nil {
		m.log = slog.Default().With("component", "mapper")
	}
	m.cols = []prometheus.Collector{m.traces, m.changes, m.probes, m.hops, m.routes, m.conf, m.sweepDur, m.held}
	if cfg.Registerer != nil {
		for i, c := range m.cols {
			if err := cfg.Registerer.Register(c); err != nil {
				for _, r := range m.cols[:i] {
					cfg.Registerer.Unregister(r)
				}
				return nil, fmt.Errorf("mapper: register metrics: %w", err)
			}
		}
		m.reg = cfg.Registerer
	}
	return m, nil
}

// Close unregisters the mapper's metrics. Stop Run first (cancel its
// context).
func (m *Mapper) Close() error {
	if m.reg != nil {
		for _, c := range m.cols {
			m.reg.Unregister(c)
		}
		m.reg = nil
	}
	return nil
}

// AddPeer starts tracing addr. The cluster layer calls it when a member
// joins; the peer is traced on every port within one sweep. Adding a known
// peer, the local address or an invalid address does nothing.
func (m *Mapper) AddPeer(addr netip.Addr) {
	addr = addr.Unmap()
	if !addr.IsValid() || addr == m.cfg.LocalAddr {
		return
	}
	m.mu.Lock()
	if _, ok := m.peers[addr]; ok {
		m.mu.Unlock()
		return
	}
	m.peers[addr] = &peerState{
		addr:      addr,
		ports:     make(map[uint16]*portState),
		added:     m.clock.Now(),
		sweepMask: make(map[uint16]bool),
		groups:    make(map[groupKey]*group),
		fib:       fibState{sweep: -1},
	}
	// New peers go first: their first trace is the next one scheduled.
	m.order = slices.Insert(m.order, 0, addr)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// RemovePeer stops tracing addr and removes every route to it from the
// sink. A trace to addr in flight is discarded when it returns.
func (m *Mapper) RemovePeer(addr netip.Addr) {
	addr = addr.Unmap()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.peers[addr]; !ok {
		return
	}
	delete(m.peers, addr)
	m.order = slices.DeleteFunc(m.order, func(a netip.Addr) bool { return a == addr })
	m.sink.RemoveHost(addr)
	p := addr.String()
	m.traces.DeletePartialMatch(prometheus.Labels{"peer": p})
	m.changes.DeleteLabelValues(p)
	m.probes.DeleteLabelValues(p)
	m.hops.DeletePartialMatch(prometheus.Labels{"peer": p})
	m.routes.DeleteLabelValues(p)
	m.conf.DeleteLabelValues(p)
}

// Run sweeps until ctx is done, then returns nil. One sweep traces source
// port S to every peer, then S+1 to every peer, and so on, pausing Interval
// (with jitter) between traces. With no peers it waits for AddPeer.
func (m *Mapper) Run(ctx context.Context) error {
	// Spread agents that start together.
	if m.cfg.Jitter > 0 {
		if err := m.clock.Sleep(ctx, m.jitterDuration(0, m.cfg.Interval)); err != nil {
			return nil
		}
	}
	for ctx.Err() == nil {
		m.mu.Lock()
		n := len(m.peers)
		m.mu.Unlock()
		if n == 0 {
			select {
			case <-m.wake:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		if err := m.sweep(ctx); err != nil {
			return nil
		}
	}
	return nil
}

// jitterDuration returns a uniformly random duration in [lo, hi).
func (m *Mapper) jitterDuration(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return lo + time.Duration(m.rng.Int64N(int64(hi-lo)))
}

// pause is the wait after one trace: Interval*(1±Jitter).
func (m *Mapper) pause() time.Duration {
	j := time.Duration(float64(m.cfg.Interval) * m.cfg.Jitter)
	if j == 0 {
		return m.cfg.Interval
	}
	return m.jitterDuration(m.cfg.Interval-j, m.cfg.Interval+j+1)
}

// sweep traces every port to every peer once, breadth-first. It returns
// ctx.Err() when cancelled.
func (m *Mapper) sweep(ctx context.Context) error {
	start := m.clock.Now()
	m.mu.Lock()
	// A fresh random peer order per sweep, so that agents sweeping the same
	// peers don't converge on the same one at the same time.
	m.rng.Shuffle(len(m.order), func(i, j int) { m.order[i], m.order[j] = m.order[j], m.order[i] })
	// Peers never traced yet go first: a new peer's first route comes first.
	slices.SortStableFunc(m.order, func(a, b netip.Addr) int {
		return cmp.Compare(untraced(m.peers[b]), untraced(m.peers[a]))
	})
	for _, p := range m.peers {
		clear(p.sweepMask)
	}
	m.mu.Unlock()
	for port := int(m.cfg.SrcPortStart); port <= int(m.cfg.SrcPortEnd); port++ {
		// Peers added during the sweep join at the next port.
		m.mu.Lock()
		order := slices.Clone(m.order)
		m.mu.Unlock()
		if err := m.tracePort(ctx, order, uint16(port)); err != nil {
			return err
		}
	}
	end := m.clock.Now()
	m.mu.Lock()
	m.sweeps++
	m.mu.Unlock()
	m.sweepDur.Set(end.Sub(start).Seconds())
	return ctx.Err()
}

// untraced is 1 for a peer with no finished trace, else 0.
func untraced(ps *peerState) int {
	if ps != nil && len(ps.ports) == 0 {
		return 1
	}
	return 0
}

// tracePort traces port to every peer in order, Parallel traces at a time,
// each followed by its pause, and returns when all are done.
func (m *Mapper) tracePort(ctx context.Context, order []netip.Addr, port uint16) error {
	slots := make(chan struct{}, m.cfg.Parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, peer := range order {
		m.mu.Lock()
		_, ok := m.peers[peer]
		m.mu.Unlock()
		if !ok {
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			m.traceOne(ctx, peer, port)
			m.clock.Sleep(ctx, m.pause())
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// waitBudget waits until the trace rate and the routers expected to answer
// ttls allow the round.
func (m *Mapper) waitBudget(ctx context.Context, tp *tracePlan, ttls []int) error {
	now := m.clock.Now()
	var d time.Duration
	if m.cfg.TraceRate != nil {
		d = m.cfg.TraceRate.Reserve(now, len(ttls))
	}
	if m.cfg.RouterBudget != nil {
		var routers []string
		for _, t := range ttls {
			if t < len(tp.predicted) && t < tp.limit && tp.predicted[t].Addr.IsValid() {
				routers = append(routers, tp.predicted[t].Addr.String())
			}
		}
		d = max(d, m.cfg.RouterBudget.Reserve(now, routers))
	}
	if d <= 0 {
		return nil
	}
	m.held.Add(d.Seconds())
	return m.clock.Sleep(ctx, d)
}

// traceOne traces one flow and stores the outcome: rounds of probes, each
// planned by planLocked from what the previous ones answered, until every
// hop up to the peer is probed or inferred (or the trace ends without it).
// TraceTimeout bounds the whole trace.
func (m *Mapper) traceOne(ctx context.Context, peer netip.Addr, port uint16) {
	if m.afterTrace != nil {
		defer m.afterTrace(peer, port)
	}
	tp := m.startTrace(peer, port)
	if tp == nil {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, m.cfg.TraceTimeout)
	defer cancel()
	var err error
	for {
		m.mu.Lock()
		ps, ok := m.peers[peer]
		var ttls []int
		if ok {
			ttls = m.planLocked(ps, tp)
		}
		m.mu.Unlock()
		if !ok {
			return
		}
		if len(ttls) == 0 {
			break
		}
		if werr := m.waitBudget(tctx, tp, ttls); werr != nil {
			err = werr
			break
		}
		res, perr := m.tracer.ProbeTTLs(tctx, peer, port, ttls)
		before := tp.resolvedCount()
		tp.apply(res)
		if perr != nil {
			err = perr
			break
		}
		if tp.resolvedCount() == before {
			err = fmt.Errorf("mapper: tracer answered none of TTLs %v", ttls)
			break
		}
	}
	o := tp.outcome(m.cfg.MaxSilent)
	if ctx.Err() != nil && (err != nil || !o.reached) {
		// Cut short by shutdown: not the network's fault, so no result;
		// the probes it sent still count.
		m.mu.Lock()
		if _, ok := m.peers[peer]; ok && tp.probes > 0 {
			m.probes.WithLabelValues(peer.String()).Add(float64(tp.probes))
		}
		m.mu.Unlock()
		return
	}
	m.record(tp, o, err)
}

// record stores one trace's outcome. The sink is written under m.mu so that
// a concurrent RemovePeer cannot be undone by a trace that was in flight.
func (m *Mapper) record(tp *tracePlan, o outcome, err error) {
	peer, port := tp.peer, tp.port
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ps, ok := m.peers[peer]
	if !ok {
		return
	}
	st := ps.ports[port]
	if st == nil {
		st = &portState{obs: make(map[int]netip.Addr)}
		ps.ports[port] = st
	}
	st.traced = true
	st.lastTrace = now
	st.probesSent += tp.probes
	ps.sweepMask[port] = true
	if len(ps.sweepMask) == int(m.cfg.SrcPortEnd-m.cfg.SrcPortStart)+1 {
		ps.lastSweep = now // every port traced in this sweep
	}
	label := peer.String()
	m.probes.WithLabelValues(label).Add(float64(tp.probes))
	m.observeLocked(ps, st, tp, o)
	// TTL 1 as this sweep's probe found it, for the other ports.
	if s1 := tp.slot(1); ps.fib.sweep == tp.sweep && ps.fib.single && s1.resolved && s1.source == HopProbed &&
		s1.hop.Addr.IsValid() && !s1.dest && !s1.unreach {
		ps.fib.hop = s1.hop
	}
	inferred := 0
	for ttl := 1; ttl <= o.end; ttl++ {
		src := tp.slots[ttl].source
		m.hops.WithLabelValues(label, src).Inc()
		if src == HopMDA {
			inferred++
		}
	}

	result := ResultReached
	switch {
	case err != nil:
		result = ResultError
	case !o.reached:
		result = ResultUnreached
	}
	st.lastResult = result
	m.traces.WithLabelValues(label, result).Inc()
	if result != ResultReached {
		// Keep the last good route: one lost trace must not churn the
		// graph, and a route that stopped answering is exactly the one whose
		// pings should show the loss.
		st.failures++
		if err != nil {
			m.log.Debug("trace failed", "peer", peer, "srcPort", port, "failures", st.failures, "err", err)
		} else {
			m.log.Debug("trace did not reach peer", "peer", peer, "srcPort", port, "failures", st.failures,
				"hops", hopStrings(o.hops))
		}
		return
	}
	st.failures = 0
	st.inferred = inferred
	route := buildRoute(m.cfg.LocalAddr, peer, o.hops)
	key := graph.RouteKey{Src: m.cfg.LocalAddr, Dst: peer, SrcPort: port}
	id, change := m.sink.SetRoute(key, route)
	if change != nil {
		st.changes++
		ps.changes++
		m.changes.WithLabelValues(label).Inc()
		m.log.Info("path change", "peer", peer, "srcPort", port,
			"oldRoute", change.OldRoute, "newRoute", change.NewRoute,
			"oldHops", change.OldHops, "newHops", change.NewHops, "hopDelta", change.HopDelta)
	}
	// When the graph kept the route (same id, e.g. a silent hop flickered),
	// keep the hops it was stored with.
	if st.route == nil || id != st.routeID {
		st.route = route
	}
	st.routeID = id
	cov := m.coverageLocked(ps)
	m.routes.WithLabelValues(label).Set(float64(cov.Routes))
	if cov.Confident {
		m.conf.WithLabelValues(label).Set(1)
	} else {
		m.conf.WithLabelValues(label).Set(0)
	}
	// Say once per peer, after its first full sweep, when the port range is
	// too small for the confidence asked: operators size the range from it.
	if !ps.coverageLogged && !ps.lastSweep.IsZero() {
		ps.coverageLogged = true
		m.log.Info("ECMP coverage after first sweep", "peer", peer, "routes", cov.Routes,
			"confident", cov.Confident, "confidence", m.cfg.Confidence,
			"portsUsed", cov.FlowsUsed, "portsNeeded", cov.FlowsNeeded, "missProbability", cov.MissProbability)
	}
}

func (m *Mapper) coverageLocked(ps *peerState) Coverage {
	var routes [][]string
	for port := int(m.cfg.SrcPortStart); port <= int(m.cfg.SrcPortEnd); port++ {
		if st := ps.ports[uint16(port)]; st != nil && st.route != nil {
			routes = append(routes, hopStrings(st.route))
		}
	}
	return coverage(routes, m.cfg.Confidence)
}

// Sweeps returns how many sweeps Run has completed.
func (m *Mapper) Sweeps() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sweeps
}

// PeerStatus is one row of /v1/mapper/peers.
type PeerStatus struct {
	Peer netip.Addr `json:"peer"`
	// Reason is why the probe plan probes the peer: mesh, rack, coverage
	// or rotation (internal/plan); empty when no plan chose it.
	Reason plan.Reason `json:"reason,omitempty"`
	// PortsTraced counts ports with at least one finished trace,
	// PortsWithRoute those with a route in the graph.
	PortsTraced    int `json:"portsTraced"`
	PortsWithRoute int `json:"portsWithRoute"`
	PortsInRange   int `json:"portsInRange"`
	// FailingPorts are ports whose last trace did not reach the peer (their
	// last good route, if any, is kept).
	FailingPorts []uint16 `json:"failingPorts,omitempty"`
	Coverage
	PathChanges int `json:"pathChanges"`
	// LastSweep is when the last sweep that traced every port to this peer
	// ended; zero until one has.
	LastSweep time.Time `json:"lastSweep,omitzero"`
	LastTrace time.Time `json:"lastTrace,omitzero"`
	Added     time.Time `json:"added"`
}

// Peers reports, per peer, what the port range found and whether it was
// enough to see every path at the configured confidence.
func (m *Mapper) Peers() []PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PeerStatus, 0, len(m.peers))
	for _, ps := range m.peers {
		s := PeerStatus{
			Peer:         ps.addr,
			Reason:       ps.reason,
			PortsInRange: int(m.cfg.SrcPortEnd-m.cfg.SrcPortStart) + 1,
			Coverage:     m.coverageLocked(ps),
			PathChanges:  ps.changes,
			LastSweep:    ps.lastSweep,
			Added:        ps.added,
		}
		for port := int(m.cfg.SrcPortStart); port <= int(m.cfg.SrcPortEnd); port++ {
			st := ps.ports[uint16(port)]
			if st == nil || !st.traced {
				continue
			}
			s.PortsTraced++
			if st.route != nil {
				s.PortsWithRoute++
			}
			if st.failures > 0 {
				s.FailingPorts = append(s.FailingPorts, uint16(port))
			}
			if st.lastTrace.After(s.LastTrace) {
				s.LastTrace = st.lastTrace
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Peer.Compare(b.Peer) })
	return out
}

// RouteMapEntry is one row of /v1/mapper/routemap: the route one flow takes.
type RouteMapEntry struct {
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	SrcPort uint16     `json:"srcPort"`
	RouteID string     `json:"routeId"`
	Hops    []string   `json:"hops"` // addresses, endpoints included, "*" for silent hops
}

// RouteMap lists every (peer, source port) flow with a route, sorted by peer
// then port.
func (m *Mapper) RouteMap() []RouteMapEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []RouteMapEntry
	for _, ps := range m.peers {
		for port, st := range ps.ports {
			if st.route == nil {
				continue
			}
			out = append(out, RouteMapEntry{
				Src: m.cfg.LocalAddr, Dst: ps.addr, SrcPort: port,
				RouteID: st.routeID, Hops: hopStrings(st.route),
			})
		}
	}
	slices.SortFunc(out, func(a, b RouteMapEntry) int {
		return cmp.Or(a.Dst.Compare(b.Dst), cmp.Compare(a.SrcPort, b.SrcPort))
	})
	return out
}

var _ Sink = (*graph.Graph)(nil)

// SetPlan makes the traced peers exactly the plan's picks: peers not in it
// are removed (their routes leave the graph), new ones are added and traced
// first, and every peer's reason is updated for /v1/mapper/peers.
func (m *Mapper) SetPlan(picks []plan.Pick) {
	want := make(map[netip.Addr]plan.Reason, len(picks))
	for _, p := range picks {
		if a := p.Addr.Unmap(); a.IsValid() && a != m.cfg.LocalAddr {
			want[a] = p.Reason
		}
	}
	m.mu.Lock()
	var gone []netip.Addr
	for a := range m.peers {
		if _, ok := want[a]; !ok {
			gone = append(gone, a)
		}
	}
	m.mu.Unlock()
	for _, a := range gone {
		m.RemovePeer(a)
	}
	for a := range want {
		m.AddPeer(a)
	}
	m.mu.Lock()
	for a, r := range want {
		if ps := m.peers[a]; ps != nil {
			ps.reason = r
		}
	}
	m.mu.Unlock()
}

// Racks returns this host's first-hop router and each traced peer's (the
// hop before it), as the mapper's routes show them: the plan's rack peers.
// A router is known once any route shows it; routes through a silent hop
// there say nothing.
func (m *Mapper) Racks() (self netip.Addr, peers map[netip.Addr]netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	peers = make(map[netip.Addr]netip.Addr)
	for a, ps := range m.peers {
		for _, st := range ps.ports {
			if n := len(st.route); n >= 3 {
				if h := st.route[1].Addr; h.IsValid() && !self.IsValid() {
					self = h
				}
				if h := st.route[n-2].Addr; h.IsValid() {
					peers[a] = h
				}
			}
		}
	}
	return self, peers
}

// RackOf tells with one Paris probe pair (TTL 1 and 2, first source port,
// under -traceRate) whether peer sits behind this host's first-hop router:
// then the peer answers at TTL 2 (or 1) and rack is the router that answered
// TTL 1. A peer further away gives same == false. The plan uses it to find
// rack peers it has not traced.
func (m *Mapper) RackOf(ctx context.Context, peer netip.Addr) (rack netip.Addr, same bool, err error) {
	if m.cfg.TraceRate != nil {
		if err := m.clock.Sleep(ctx, m.cfg.TraceRate.Reserve(m.clock.Now(), 2)); err != nil {
			return netip.Addr{}, false, err
		}
	}
	tctx, cancel := context.WithTimeout(ctx, m.cfg.TraceTimeout)
	defer cancel()
	res, err := m.tracer.ProbeTTLs(tctx, peer.Unmap(), m.cfg.SrcPortStart, []int{1, 2})
	if err != nil {
		return netip.Addr{}, false, err
	}
	answered := false
	for _, a := range res.Answers {
		switch {
		case a.TTL == 1 && !a.Dest:
			rack = a.Hop.Addr
		case a.Dest && a.TTL <= 2:
			same = true
		}
		answered = answered || (a.TTL >= 2 || a.Dest) && (a.Dest || a.Hop.Addr.IsValid())
	}
	if !answered {
		// Nobody answered past TTL 1: perhaps the peer is not running yet.
		return rack, false, fmt.Errorf("mapper: no answer from or towards %s at TTL 2", peer)
	}
	return rack, same && rack.IsValid(), nil
}
