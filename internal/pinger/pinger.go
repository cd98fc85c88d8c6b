// Package pinger decides which routes to ping when and feeds the outcomes
// into route metrics. It parses no packets: internal/probe sends the pings
// and matches the acks.
//
// # Semantics
//
// A flow is a graph.RouteKey (Src, Dst, SrcPort) from the route source (the
// graph, which the mapper fills). The ports of one peer whose forward route
// (RouteIDs) and reverse route (Config.Reverse: the peer's own route back on
// the same port, where the mirrored ack returns) are both known and both
// the same share one schedule and take turns: the load is one flow per
// distinct (forward, reverse) pair, and every port is still pinged every
// few rounds so a silent path change shows. A port whose forward or reverse
// route is unknown has a schedule of its own (it pings more, never less),
// and with EveryPort every port has one. Every PeerInterval the pinger pings
// each schedule that is due. Each schedule is due every RouteInterval:
// a new one gets a random phase in [0, RouteInterval), so flows never burst
// together, and the next due time advances by RouteInterval from the
// previous one (not from the visit), so the average spacing is exactly
// RouteInterval; the visit grain adds at most PeerInterval of jitter to one
// ping. A schedule that fell behind (the process was stopped, or -probeRate
// held it back: most overdue first, counted in dnms_pings_deferred_total)
// restarts from now instead of catching up in a burst.
//
// Every probe.Result becomes one graph.Sample on its flow's key via
// Sink.AddSample: acked pings with their RTT and time source, lost pings with
// the direction the reflector counters told (forward, reverse, unknown). A
// lost ping's result arrives up to Timeout plus the probe engine's loss
// resolve window after it was sent.
//
// Metrics (labels: peer, direction): dnms_probes_sent_total,
// dnms_probes_received_total, dnms_probes_lost_total,
// dnms_probe_rtt_seconds (classic buckets from 10 µs, ×4, plus a native
// histogram with bucket factor 1.1), dnms_probe_jitter_seconds. A peer's
// series are deleted when it has no flow any more.
package pinger

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/probe"
)

// Prober sends one ping on a flow and delivers every ping's outcome.
// *probe.Engine implements it.
type Prober interface {
	Ping(peer netip.Addr, srcPort uint16) (seq uint64, err error)
	Results() <-chan probe.Result
}

// BatchProber is a Prober that can send many pings in few syscalls
// (*probe.Engine does, with sendmmsg). The pinger uses it when it can.
type BatchProber interface {
	PingBatch(flows []probe.FlowKey) error
}

// Routes lists the flows to ping. *graph.Graph implements it.
type Routes interface {
	RouteKeys() []graph.RouteKey
}

// RouteIDs says which route a flow takes. When Routes implements it
// (*graph.Graph does), and Config.Reverse knows the reverse routes, flows to
// one peer on the same route both ways are pinged one at a time, taking
// turns.
type RouteIDs interface {
	RouteOf(key graph.RouteKey) (string, bool)
}

// Sink receives one sample per ping. *graph.Graph implements it.
type Sink interface {
	AddSample(key graph.RouteKey, s graph.Sample)
}

// Config configures a Pinger. Build it from DefaultConfig.
type Config struct {
	// PeerInterval is how often every peer is visited.
	PeerInterval time.Duration
	// RouteInterval is how often each flow is pinged.
	RouteInterval time.Duration
	// Timeout is the ping timeout the probe engine uses (set the same value
	// in probe.Config); the pinger only uses it to know how long a result
	// may still arrive for a flow that left the route source.
	Timeout time.Duration
	// Local, when valid, restricts pinging to flows whose Src is Local (an
	// agent's graph holds only its own routes, but an aggregator's holds
	// everyone's).
	Local netip.Addr
	// Rate, when set, caps pings (-probeRate): due pings past the cap wait
	// for the next visit, most overdue first.
	Rate *plan.Rate
	// Reverse says which route each flow's acks take back (reverse.go).
	// Ports share a schedule only when both routes are known: nil pings
	// every port.
	Reverse ReverseIDs
	// EveryPort gives every port its own schedule (-pingEveryPort): the
	// load is one ping per mapped port per RouteInterval, as if routes were
	// unknown.
	EveryPort  bool
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DefaultConfig: visit peers every 100 ms, ping each flow every second, 1 s
// timeout.
func DefaultConfig() Config {
	return Config{PeerInterval: 100 * time.Millisecond, RouteInterval: time.Second, Timeout: time.Second}
}

type flowKey struct {
	peer netip.Addr
	port uint16
}

type flow struct {
	key  graph.RouteKey
	gone time.Time // when it left the route source (zero while present)
}

// turnKey names the flows that share one schedule: one peer's ports on one
// (forward, reverse) route pair, or a single port when either is unknown.
type turnKey struct {
	peer     netip.Addr
	fwd, rev string
	port     uint16 // set only on a port's own schedule
}

// turn is one schedule: due every RouteInterval, pinging the next of its
// ports each time.
type turn struct {
	next  time.Time
	count int
	ports []uint16 // this visit's ports, sorted
}

// Pinger schedules pings and records their results.
type Pinger struct {
	cfg    Config
	prober Prober
	routes Routes
	sink   Sink
	log    *slog.Logger

	mu     sync.Mutex
	flows  map[flowKey]*flow
	turns  map[turnKey]*turn
	seen   map[netip.Addr]bool // peers with metric series
	jitter map[netip.Addr]*peerJitter

	deferred prometheus.Counter

	sent, received *prometheus.CounterVec
	lost           *prometheus.CounterVec
	resolved       *prometheus.CounterVec
	rtt            *prometheus.HistogramVec
}

// RTTBuckets are the classic buckets of dnms_probe_rtt_seconds: 10 µs
// times 4 up to 655 ms, nine buckets (12 series per peer with +Inf, _sum
// and _count), so that 64 peers stay within the agent's series budget; the
// native histogram (factor 1.1) carries the fine resolution.
func RTTBuckets() []float64 { return prometheus.ExponentialBuckets(10e-6, 4, 9) }

// New checks cfg and registers the metrics.
func New(cfg Config, p Prober, routes Routes, sink Sink) (*Pinger, error) {
	if p == nil || routes == nil || sink == nil {
		return nil, errors.New("pinger: prober, routes and sink are required")
	}
	d := DefaultConfig()
	if cfg.PeerInterval <= 0 {
		cfg.PeerInterval = d.PeerInterval
	}
	if cfg.RouteInterval <= 0 {
		cfg.RouteInterval = d.RouteInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pg := &Pinger{
		cfg: cfg, prober: p, routes: routes, sink: sink, log: cfg.Logger,
		flows:  make(map[flowKey]*flow),
		turns:  make(map[turnKey]*turn),
		jitter: make(map[netip.Addr]*peerJitter),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_pings_deferred_total",
			Help: "Due pings held back to a later visit by -probeRate: when it grows, the cap, not -pingRouteInterval, sets the pace.",
		}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_probes_sent_total", Help: "Pings sent, per peer.",
		}, []string{"peer"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_probes_received_total", Help: "Pings acked in time, per peer.",
		}, []string{"peer"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_probes_lost_total", Help: "Pings lost, per peer and direction (forward, reverse, unknown), counted once when each timed out: unknown when no ack had told the direction yet (see dnms_probes_loss_resolved_total).",
		}, []string{"peer", "direction"}),
		resolved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_probes_loss_resolved_total", Help: "Pings counted lost with direction unknown whose direction (forward, reverse) a later ack's reflector counters told, per peer.",
		}, []string{"peer", "direction"}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dnms_probe_rtt_seconds", Help: "Ping round-trip time minus reflector dwell, per peer.",
			Buckets: RTTBuckets(), NativeHistogramBucketFactor: 1.1,
			NativeHistogramMaxBucketNumber: 160, NativeHistogramMinResetDuration: time.Hour,
		}, []string{"peer"}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{pg.sent, pg.received, pg.lost, pg.resolved, pg.rtt, pg.deferred, pg.jitterCollector()} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return pg, nil
}

// Run pings until ctx is done, then returns ctx.Err().
func (p *Pinger) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.consume(ctx)
	}()
	defer func() { <-done }()
	t := time.NewTicker(p.cfg.PeerInterval)
	defer t.Stop()
	for {
		p.visit(time.Now())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// visit refreshes the flow list and pings every due flow.
func (p *Pinger) visit(now time.Time) {
	keys := p.routes.RouteKeys()
	ids, _ := p.routes.(RouteIDs)
	p.mu.Lock()
	present := make(map[flowKey]bool, len(keys))
	live := make(map[turnKey]bool)
	for _, k := range keys {
		if p.cfg.Local.IsValid() && k.Src != p.cfg.Local {
			continue
		}
		fk := flowKey{k.Dst, k.SrcPort}
		present[fk] = true
		f := p.flows[fk]
		if f == nil {
			f = &flow{}
			p.flows[fk] = f
		}
		f.key, f.gone = k, time.Time{}
		tk := p.turnOf(k, ids)
		t := p.turns[tk]
		if t == nil {
			// A random phase, so that flows never burst together.
			t = &turn{next: now.Add(time.Duration(rand.Int64N(int64(p.cfg.RouteInterval))))}
			p.turns[tk] = t
		}
		if !live[tk] {
			live[tk] = true
			t.ports = t.ports[:0]
		}
		t.ports = append(t.ports, k.SrcPort)
	}
	due := p.dueLocked(now, live)
	peers := p.forgetLocked(now, present)
	p.mu.Unlock()
	p.forgetPeers(peers)
	p.send(due)
}

// turnOf names the schedule a flow belongs to: its (forward, reverse) route
// pair when both are known, else a schedule of its own.
func (p *Pinger) turnOf(k graph.RouteKey, ids RouteIDs) turnKey {
	own := turnKey{peer: k.Dst, port: k.SrcPort}
	if p.cfg.EveryPort || ids == nil || p.cfg.Reverse == nil {
		return own
	}
	// Ask for the reverse route first: asking is what tells the source
	// which peers are pinged.
	rev, ok := p.cfg.Reverse.ReverseOf(k)
	if !ok || rev == "" {
		return own
	}
	fwd, ok := ids.RouteOf(k)
	if !ok || fwd == "" {
		return own
	}
	return turnKey{peer: k.Dst, fwd: fwd, rev: rev}
}

// dueLocked advances the schedules that are due, as far as the rate cap
// allows (most overdue first), and returns the flows to ping. Schedules
// that left are dropped.
func (p *Pinger) dueLocked(now time.Time, live map[turnKey]bool) []probe.FlowKey {
	var due []*turn
	var dueKeys []turnKey
	for tk, t := range p.turns {
		if !live[tk] {
			delete(p.turns, tk)
			continue
		}
		if !now.Before(t.next) {
			due = append(due, t)
			dueKeys = append(dueKeys, tk)
		}
	}
	idx := make([]int, len(due))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return due[a].next.Compare(due[b].next) })
	n := len(due)
	if p.cfg.Rate != nil {
		n = p.cfg.Rate.Take(now, len(due))
		p.deferred.Add(float64(len(due) - n))
	}
	out := make([]probe.FlowKey, 0, n)
	for _, i := range idx[:n] {
		t := due[i]
		slices.Sort(t.ports)
		out = append(out, probe.FlowKey{Peer: dueKeys[i].peer, SrcPort: t.ports[t.count%len(t.ports)]})
		t.count++
		t.next = t.next.Add(p.cfg.RouteInterval)
		if t.next.Before(now) {
			// Fell behind (a stall, or the cap): restart from now rather
			// than catch up in a burst.
			t.next = now.Add(p.cfg.RouteInterval)
		}
	}
	return out
}

// forgetLocked forgets flows that left, once their last result can no
// longer come, and returns the peers that still have flows.
func (p *Pinger) forgetLocked(now time.Time, present map[flowKey]bool) map[netip.Addr]bool {
	peers := make(map[netip.Addr]bool)
	for fk, f := range p.flows {
		if !present[fk] {
			if f.gone.IsZero() {
				f.gone = now
			} else if now.Sub(f.gone) > p.cfg.Timeout+10*time.Second {
				delete(p.flows, fk)
				continue
			}
		}
		peers[fk.peer] = true
	}
	return peers
}

// send pings flows. A failed send comes back from the engine as a lost
// result too.
func (p *Pinger) send(due []probe.FlowKey) {
	for _, f := range due {
		p.sent.WithLabelValues(f.Peer.String()).Inc()
	}
	if bp, ok := p.prober.(BatchProber); ok && len(due) > 1 {
		if err := bp.PingBatch(due); err != nil {
			p.log.Debug("pings failed", "err", err)
		}
		return
	}
	for _, f := range due {
		if _, err := p.prober.Ping(f.Peer, f.SrcPort); err != nil {
			p.log.Debug("ping failed", "peer", f.Peer, "srcPort", f.SrcPort, "err", err)
		}
	}
}

// forgetPeers deletes the metric series of peers that have no flow left.
func (p *Pinger) forgetPeers(present map[netip.Addr]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = make(map[netip.Addr]bool)
	}
	for a := range present {
		p.seen[a] = true
	}
	for a := range p.seen {
		if present[a] {
			continue
		}
		delete(p.seen, a)
		l := prometheus.Labels{"peer": a.String()}
		p.sent.DeletePartialMatch(l)
		p.received.DeletePartialMatch(l)
		p.lost.DeletePartialMatch(l)
		p.resolved.DeletePartialMatch(l)
		p.rtt.DeletePartialMatch(l)
		delete(p.jitter, a)
	}
}

// consume turns results into samples until ctx is done.
func (p *Pinger) consume(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r, ok := <-p.prober.Results():
			if !ok {
				return
			}
			p.record(r)
		}
	}
}

func (p *Pinger) record(r probe.Result) {
	p.mu.Lock()
	f := p.flows[flowKey{r.Peer, r.SrcPort}]
	var key graph.RouteKey
	if f != nil {
		key = f.key
	}
	p.mu.Unlock()
	if f == nil {
		return // a flow we never pinged (or forgot)
	}
	peer := r.Peer.String()
	if r.Resolves {
		// A loss counted as unknown when it timed out: its direction.
		p.resolved.WithLabelValues(peer, dirName(r.Dir)).Inc()
		p.sink.AddSample(key, r.Sample)
		return
	}
	if r.Lost {
		p.lost.WithLabelValues(peer, dirName(r.Dir)).Inc()
	} else {
		p.received.WithLabelValues(peer).Inc()
		p.rtt.WithLabelValues(peer).Observe(r.RTT.Seconds())
		p.observeJitter(r.Peer, r.RTT)
	}
	p.sink.AddSample(key, r.Sample)
}

func dirName(d graph.LossDir) string {
	switch d {
	case graph.LossForward:
		return "forward"
	case graph.LossReverse:
		return "reverse"
	}
	return "unknown"
}
