package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/sseid"
)

// EventsPath is the member endpoint the aggregator subscribes to.
const EventsPath = "/v1/events/graph"

// Graph is what the aggregator writes: routes whose metrics each member
// computed, with the member's name as origin. *graph.Graph implements it.
type Graph interface {
	ImportRoute(origin string, r graph.Route)
	RemoveImportedRoute(origin string, key graph.RouteKey)
	RemoveOrigin(origin string)
	// SetOriginStale leaves origin's samples out of health while its
	// stream is silent; its routes stay.
	SetOriginStale(origin string, stale bool)
	// ImportMetrics applies a member's route-batch event under one lock.
	ImportMetrics(origin string, batch []graph.RouteMetrics) int
	// ImportDeltas applies a member's route-batch event in delta form
	// (api.BatchFormDeltas) under one lock; hide says which computed
	// metrics to import empty (restart.go).
	ImportDeltas(origin string, d graph.DeltaBatch, hide func(src, dst netip.Addr, m graph.Metrics) bool) (int, error)
}

var _ Graph = (*graph.Graph)(nil)

// Config configures an Aggregator.
type Config struct {
	// Token, when set, is sent as "Authorization: Bearer <token>"
	// (-aggregatorToken, defaulting to -httpToken) to members that proved
	// they belong (Trust) and to Self.
	Token string
	// Trust says how members prove membership; TLS set means TrustMTLS.
	Trust Trust
	// TLS, when set, is the cluster CA and this node's certificate: members
	// are reached over https and must present a certificate naming them.
	TLS *cluster.ClusterTLS
	// Self is this node's member name: its own agent is always trusted.
	Self string
	// SelfAddr and Started are this node's probed address and this
	// process's start: routes to or from SelfAddr whose samples began
	// before Started are imported without metrics (restart.go).
	SelfAddr netip.Addr
	Started  time.Time
	// BackoffMin and BackoffMax bound the exponential backoff (with jitter)
	// between connection attempts to one member.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// MaxLineBytes bounds one SSE line and one event's data. A snapshot is
	// one line, so this bounds the size of the graph one member can send.
	MaxLineBytes int
	// IdleTimeout drops a stream that sent nothing (members send a
	// heartbeat comment every 2 s) for this long, and reconnects: a stream
	// whose packets a faulty link black-holes stalls without an error, and
	// a new connection (new source port) likely hashes onto another path.
	IdleTimeout time.Duration
	// StaleAfter marks a member's routes stale in the graph (health leaves
	// their samples out, graph.SetOriginStale) once nothing, not even a
	// heartbeat, has come from it for this long, until it streams again.
	// Longer than IdleTimeout plus a reconnect: a stream a fault stalls
	// for a few seconds keeps counting (in the lab, leaving such members
	// out for 4 s made the aggregator's own routes the only evidence
	// while a fault cleared, and two wrong links were blamed for a few
	// seconds in a quarter of the runs); one gone longer is out of date.
	StaleAfter time.Duration
	// Deltas asks members for route batches in delta form (graph.DeltaBatch,
	// -aggregateDeltas): the changed flow-state buckets, replicated here.
	// Off by default: the replica holds every pinged key's buckets, about
	// 2.5 times the memory of window metrics (1.5 GiB of live heap instead
	// of 0.6 GiB at 1,000 agents, BenchmarkAggregatorHeapForms), for
	// 0.4–0.8 times the bytes on the wire.
	Deltas bool
	// ConnectTimeout bounds dialing and waiting for the response headers.
	ConnectTimeout time.Duration
	// Client, when set, is used instead of the built-in one (which has no
	// proxy and the timeouts above).
	Client *http.Client

	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: no metrics registered
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		BackoffMin:     250 * time.Millisecond,
		BackoffMax:     30 * time.Second,
		MaxLineBytes:   64 << 20,
		IdleTimeout:    6 * time.Second,
		StaleAfter:     15 * time.Second, // past IdleTimeout and a reconnect
		ConnectTimeout: 3 * time.Second,
	}
}

// Aggregator keeps one event stream per member and merges them into a graph.
type Aggregator struct {
	cfg    Config
	g      Graph
	log    *slog.Logger
	met    *metrics
	client *http.Client

	opMu    sync.Mutex // serialises AddMember, RemoveMember and shutdown
	mu      sync.Mutex
	members map[string]*member
	runCtx  context.Context // set by Run
	stopped bool
}

// New checks cfg and registers the metrics. Streams start with Run.
func New(cfg Config, g Graph) (*Aggregator, error) {
	if g == nil {
		return nil, errors.New("aggregator: nil graph")
	}
	if cfg.BackoffMin <= 0 || cfg.BackoffMax < cfg.BackoffMin {
		return nil, fmt.Errorf("aggregator: backoff min %v max %v: want 0 < min <= max", cfg.BackoffMin, cfg.BackoffMax)
	}
	if cfg.MaxLineBytes < 1024 {
		return nil, fmt.Errorf("aggregator: max line %d bytes is too small (want >= 1024)", cfg.MaxLineBytes)
	}
	if cfg.IdleTimeout <= 0 || cfg.ConnectTimeout <= 0 || cfg.StaleAfter <= 0 {
		return nil, fmt.Errorf("aggregator: idle timeout %v, stale-after %v and connect timeout %v must be positive", cfg.IdleTimeout, cfg.StaleAfter, cfg.ConnectTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TLS != nil {
		cfg.Trust = TrustMTLS
	}
	if cfg.Trust == TrustOpen {
		cfg.Logger.Warn("open cluster (no -gossipKey, no -tlsCAFile): members are not authenticated, so the aggregator sends them no token and imports whatever graph any gossip member serves; see docs/security.md")
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("aggregator: register metrics: %w", err)
	}
	client := cfg.Client
	if client == nil {
		d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 15 * time.Second}
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 nil, // members are reached directly
			DialContext:           d.DialContext,
			ResponseHeaderTimeout: cfg.ConnectTimeout,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       90 * time.Second,
		}}
	}
	a := &Aggregator{
		cfg:     cfg,
		g:       g,
		log:     cfg.Logger, // the caller names the component
		met:     met,
		client:  client,
		members: map[string]*member{},
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "dnms_aggregator_stale_routes",
			Help: "Routes kept from members whose event stream is down or silent (they stop changing until it is back, and health leaves their samples out); see /v1/aggregator/members.",
		}, a.staleRoutes)); err != nil {
			return nil, fmt.Errorf("aggregator: register metrics: %w", err)
		}
	}
	return a, nil
}

// BaseURL is the HTTP base of a member's API.
func BaseURL(addr netip.Addr, httpPort uint16) string {
	return "http://" + netip.AddrPortFrom(addr.Unmap(), httpPort).String()
}

// PeerJoin makes the Aggregator a cluster.Handler: a member is subscribed
// to at the API address it advertises (-httpAdvertise; its gossip address
// when it advertises none), see memberURL. Register it with
// AddHandlerWithSelf so this node's own agent is merged too.
func (a *Aggregator) PeerJoin(p cluster.Peer) { a.AddMember(p.Name, a.memberURL(p)) }

// PeerLeave removes the member's contribution.
func (a *Aggregator) PeerLeave(p cluster.Peer) { a.RemoveMember(p.Name) }

var _ cluster.Handler = (*Aggregator)(nil)

// AddMember subscribes to the member's event stream at baseURL (e.g.
// http://198.18.1.1:12345); its routes are imported with origin name. Adding
// a known member with another URL moves the stream; its routes stay until
// the new stream's snapshot replaces them.
func (a *Aggregator) AddMember(name, baseURL string) {
	baseURL = strings.TrimSuffix(baseURL, "/")
	a.opMu.Lock()
	defer a.opMu.Unlock()
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return
	}
	old := a.members[name]
	if old != nil && old.url == baseURL {
		a.mu.Unlock()
		return
	}
	m := newMember(a, name, baseURL)
	if m.client, m.idErr = a.clientFor(name, baseURL); m.idErr != nil {
		m.client = a.client
	}
	a.members[name] = m
	ctx := a.runCtx
	a.mu.Unlock()
	if old != nil {
		old.stop()
		m.adopt(old)
		a.log.Info("member moved", "member", name, "from", old.url, "to", baseURL)
	} else {
		a.log.Info("member added", "member", name, "url", baseURL)
	}
	if ctx != nil {
		m.start(ctx)
	}
}

// RemoveMember stops the member's stream and removes every route it
// contributed.
func (a *Aggregator) RemoveMember(name string) {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	a.mu.Lock()
	m := a.members[name]
	delete(a.members, name)
	a.mu.Unlock()
	if m == nil {
		return
	}
	m.stop()
	a.g.RemoveOrigin(name)
	a.log.Info("member removed", "member", name, "url", m.url)
}

// Run streams from every member until ctx ends, then stops every stream.
// Members' routes stay in the graph.
func (a *Aggregator) Run(ctx context.Context) error {
	a.opMu.Lock()
	a.mu.Lock()
	if a.runCtx != nil || a.stopped {
		a.mu.Unlock()
		a.opMu.Unlock()
		return errors.New("aggregator: Run called twice")
	}
	a.runCtx = ctx
	ms := a.memberList()
	a.mu.Unlock()
	for _, m := range ms {
		m.start(ctx)
	}
	a.opMu.Unlock()

	marked := make(chan struct{})
	go func() {
		defer close(marked)
		a.markStaleLoop(ctx)
	}()
	<-ctx.Done()
	<-marked

	a.opMu.Lock()
	defer a.opMu.Unlock()
	a.mu.Lock()
	a.stopped = true
	ms = a.memberList()
	a.mu.Unlock()
	for _, m := range ms {
		m.stop()
	}
	return nil
}

func (a *Aggregator) memberList() []*member {
	ms := make([]*member, 0, len(a.members))
	for _, m := range a.members {
		ms = append(ms, m)
	}
	return ms
}

// --- one member's stream ----------------------------------------------------

// Reasons to take a fresh snapshot.
const (
	reasonResync   = "resync"    // the member told us to
	reasonGap      = "gap"       // an event id was skipped
	reasonBadEvent = "bad_event" // an event we need could not be decoded
	// An event contradicts what the stream told us so far: a route-add for
	// a route we have, an update or remove for one we do not. Event ids name
	// their process, so this means a member bug; start over.
	reasonInconsistent = "inconsistent"
	// An event's id names another process than the stream's snapshot.
	reasonRestarted = "restarted"
)

type member struct {
	a    *Aggregator
	name string
	url  string

	cancel context.CancelFunc
	done   chan struct{}

	client *http.Client // with TLS: checks this member's identity
	idErr  error        // the member's URL cannot be verified: never connect

	// Owned by the stream goroutine (or by AddMember before it starts).
	instance string                      // the member process our ids come from
	batched  bool                        // this stream sends route-batch events
	form     int                         // their form (api.BatchForm*), 0 when unbatched
	lastID   uint64                      // last applied event seq of instance
	synced   bool                        // a snapshot was applied on this stream
	keys     map[graph.RouteKey]string   // imported key -> route id
	byRoute  map[string][]graph.RouteKey // route id -> its imported keys
	has      map[string]bool             // route ids the member has, per its stream

	state      atomic.Value // string
	reason     atomic.Value // string: why the last attempt failed, "" when connected
	lastEvent  atomic.Int64 // unix ns of the last applied event, 0 before any
	lastLine   atomic.Int64 // unix ns of the last line read (heartbeats too)
	stale      atomic.Bool  // marked stale in the graph (markStale)
	lastSeen   atomic.Uint64
	nroutes    atomic.Int64
	reconnects atomic.Uint64
	batch      atomic.Value // string: the stream's api.BatchHeader, "" when unbatched
	batchForm  atomic.Int32 // the stream's batch form, 0 when unbatched
}

func newMember(a *Aggregator, name, url string) *member {
	m := &member{a: a, name: name, url: url, keys: map[graph.RouteKey]string{}, byRoute: map[string][]graph.RouteKey{}, has: map[string]bool{}}
	m.state.Store("idle")
	m.reason.Store("")
	m.batch.Store("")
	return m
}

// adopt takes over what a stopped stream for the same member imported, so
// the next snapshot removes what is stale.
func (m *member) adopt(old *member) {
	m.keys, m.byRoute, m.has = old.keys, old.byRoute, old.has
	m.nroutes.Store(int64(len(m.byRoute)))
}

func (m *member) start(ctx context.Context) {
	ctx, m.cancel = context.WithCancel(ctx)
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		m.run(ctx)
	}()
}

// stop ends the stream and waits for it: nothing is imported after stop.
func (m *member) stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	<-m.done
	if m.client != nil && m.client != m.a.client {
		m.client.CloseIdleConnections() // the member's own TLS transport
	}
}

func (m *member) setState(s string) {
	old, _ := m.state.Load().(string)
	if old == s {
		return
	}
	if old == stateConnecting || old == stateConnected || old == stateBackoff || old == stateRejected {
		m.a.met.streams.WithLabelValues(old).Dec()
	}
	if s == stateConnecting || s == stateConnected || s == stateBackoff || s == stateRejected {
		m.a.met.streams.WithLabelValues(s).Inc()
	}
	m.state.Store(s)
}

func (m *member) run(ctx context.Context) {
	defer m.setState("stopped")
	cfg := m.a.cfg
	log := m.a.log.With("member", m.name, "url", m.url)
	wait := cfg.BackoffMin
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			m.a.met.reconnects.Inc()
			m.reconnects.Add(1)
		}
		m.setState(stateConnecting)
		r := m.stream(ctx, log)
		if ctx.Err() != nil {
			return
		}
		// A member that restarted answers our resume point (which names
		// the old process) with a snapshot: no guessing needed here.
		switch {
		case r.resync != "":
			m.a.met.resyncs.WithLabelValues(r.resync).Inc()
			log.Info("taking a fresh snapshot", "reason", r.resync, "detail", r.err)
			m.lastID, m.synced = 0, false
			if r.progressed {
				wait = cfg.BackoffMin
			}
		case r.connected && r.progressed:
			log.Info("stream ended, resuming", "last_event_id", m.lastID, "err", r.err)
			wait = cfg.BackoffMin
		default:
			log.Warn("member stream failed", "err", r.err, "retry_in", wait)
		}
		m.failed(r, log)
		d := wait/2 + rand.N(wait/2+1) // jitter in [wait/2, wait]
		if r.retryAfter > 0 && r.retryAfter < d {
			d = r.retryAfter // a busy member said when to come back
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !r.progressed {
			wait = min(wait*2, cfg.BackoffMax)
		}
	}
}

type streamResult struct {
	connected  bool   // got a 200 response
	progressed bool   // applied at least one event
	resync     string // reason to drop lastID, or ""
	status     int    // HTTP status of a refused request, else 0
	retryAfter time.Duration
	err        error
}

// stream runs one connection until it ends.
func (m *member) stream(ctx context.Context, log *slog.Logger) streamResult {
	cfg := m.a.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if m.idErr != nil {
		return streamResult{err: m.idErr}
	}
	// batch=1 asks for route-batch events of window metrics; with Deltas,
	// batch=1&batch=2 asks for either form, deltas preferred
	// (api.BatchHeader says the member sends batches, api.BatchFormHeader
	// in which form). A member that predates delta batches reads only the
	// first value, 1; one that predates batches ignores both.
	query := "?batch=1"
	if cfg.Deltas {
		query = "?batch=1&batch=2"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url+EventsPath+query, nil)
	if err != nil {
		return streamResult{err: fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-store")
	if m.a.sendsToken(m.name) {
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
	}
	if m.synced && m.instance != "" {
		req.Header.Set("Last-Event-ID", sseid.Format(m.instance, m.lastID))
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return streamResult{err: fmt.Errorf("get %s: %w", req.URL, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("get %s: %s: %s", req.URL, resp.Status, strings.TrimSpace(string(body)))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			err = fmt.Errorf("%w (check -aggregatorToken)", err)
		}
		return streamResult{err: err, status: resp.StatusCode, retryAfter: retryAfter(resp)}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return streamResult{err: fmt.Errorf("get %s: content type %q, want text/event-stream", req.URL, ct)}
	}
	m.setState(stateConnected)
	m.reason.Store("")
	batch := resp.Header.Get(api.BatchHeader)
	m.batched = batch != ""
	m.batch.Store(batch)
	m.form = 0
	if m.batched {
		m.form = api.BatchFormMetrics
		if f := resp.Header.Get(api.BatchFormHeader); f != "" {
			if f != strconv.Itoa(api.BatchFormDeltas) {
				return streamResult{connected: true, err: fmt.Errorf("get %s: batch form %q, want %d", req.URL, f, api.BatchFormDeltas)}
			}
			m.form = api.BatchFormDeltas
		}
	}
	m.batchForm.Store(int32(m.form))
	log.Debug("stream connected", "last_event_id", m.lastID)

	idle := time.AfterFunc(cfg.IdleTimeout, cancel)
	defer idle.Stop()
	r := newSSEReader(resp.Body, cfg.MaxLineBytes)
	m.lastLine.Store(time.Now().UnixNano())
	r.OnLine = func() {
		idle.Reset(cfg.IdleTimeout)
		m.lastLine.Store(time.Now().UnixNano())
	}
	res := streamResult{connected: true}
	seenGarbage := 0
	for {
		ev, err := r.Next()
		if g := r.Garbage + r.Overlong; g > seenGarbage {
			m.a.met.garbage.Add(float64(g - seenGarbage))
			seenGarbage = g
		}
		if err != nil {
			if ctx.Err() != nil && m.lastID > 0 {
				err = fmt.Errorf("no data for %v or stopped: %w", cfg.IdleTimeout, err)
			}
			res.err = err
			return res
		}
		reason, err := m.apply(ev)
		if reason != "" {
			res.resync, res.err = reason, err
			return res
		}
		if err != nil {
			log.Debug("event skipped", "event", ev.Name, "err", err)
			continue
		}
		res.progressed = true
	}
}

// apply applies one event. It returns a resync reason when the member's
// view can no longer be trusted, or an error for an event it skipped.
func (m *member) apply(ev sseEvent) (string, error) {
	m.a.met.events.WithLabelValues(eventLabel(ev.Name)).Inc()
	if ev.Name == "resync" {
		return reasonResync, errors.New(strings.TrimSpace(string(ev.Data)))
	}
	known := ev.Name == "snapshot" || ev.Name == string(graph.EventRouteAdd) ||
		ev.Name == string(graph.EventRouteUpdate) || ev.Name == string(graph.EventRouteRemove) ||
		ev.Name == string(graph.EventRouteBatch)
	if ev.Broken {
		if known || ev.HasID {
			return reasonBadEvent, fmt.Errorf("%s event with an over-long line", ev.Name)
		}
		return "", errors.New("over-long event dropped")
	}
	var (
		id   uint64
		inst string
	)
	if ev.HasID {
		var ok bool
		if inst, id, ok = sseid.Parse(strings.TrimSpace(ev.ID)); !ok {
			if known {
				return reasonBadEvent, fmt.Errorf("%s event id %q is not <instance>-<seq>", ev.Name, ev.ID)
			}
			return "", fmt.Errorf("event id %q is not <instance>-<seq>", ev.ID)
		}
	}
	if ev.Name == "snapshot" {
		var s graph.Snapshot
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return reasonBadEvent, fmt.Errorf("decode snapshot: %w", err)
		}
		if !ev.HasID {
			return reasonBadEvent, errors.New("snapshot without an id")
		}
		m.applySnapshot(s)
		m.instance, m.lastID, m.synced = inst, s.EventID, true
		m.seen(m.lastID)
		return "", nil
	}
	if !ev.HasID {
		return "", fmt.Errorf("%s event without id ignored", ev.Name)
	}
	if !m.synced {
		return "", fmt.Errorf("%s event %d before any snapshot ignored", ev.Name, id)
	}
	if inst != m.instance {
		return reasonRestarted, fmt.Errorf("%s event from instance %q, our snapshot is from %q", ev.Name, inst, m.instance)
	}
	if ev.Name == string(graph.EventRouteBatch) {
		return m.applyBatch(ev, id)
	}
	if id <= m.lastID {
		return "", fmt.Errorf("duplicate %s event %d (have %d)", ev.Name, id, m.lastID)
	}
	// A batched stream skips the ids of the metrics updates it folds into
	// route-batch events, so only an unbatched one can see a gap.
	if id != m.lastID+1 && !m.batched {
		return reasonGap, fmt.Errorf("event %d after %d", id, m.lastID)
	}
	if known {
		var e graph.Event
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return reasonBadEvent, fmt.Errorf("decode %s event %d: %w", ev.Name, id, err)
		}
		if e.Route == nil {
			return reasonBadEvent, fmt.Errorf("%s event %d has no route", ev.Name, id)
		}
		rid := routeID(*e.Route)
		if have := m.has[rid]; have == (ev.Name == string(graph.EventRouteAdd)) {
			return reasonInconsistent, fmt.Errorf("%s event %d for route %s, which we %s", ev.Name, id, rid,
				map[bool]string{true: "already have", false: "do not have"}[have])
		}
		if ev.Name == string(graph.EventRouteRemove) {
			m.removeRoute(e.Route.ID)
		} else {
			m.importRoute(*e.Route)
		}
	}
	// path-change, node-* and link-*: the graph derives them from routes.
	m.lastID = id
	m.seen(id)
	return "", nil
}

// applyBatch applies a route-batch event: the metrics of routes the stream
// already announced, as of event id (which the event before it may share).
func (m *member) applyBatch(ev sseEvent, id uint64) (string, error) {
	if !m.batched {
		return reasonInconsistent, fmt.Errorf("route-batch event %d on a stream without %s", id, api.BatchHeader)
	}
	if id < m.lastID {
		return "", fmt.Errorf("stale route-batch event %d (have %d)", id, m.lastID)
	}
	var e graph.Event
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return reasonBadEvent, fmt.Errorf("decode route-batch event %d: %w", id, err)
	}
	if e.Deltas != nil {
		if reason, err := m.applyDeltas(*e.Deltas, id); reason != "" {
			return reason, err
		}
	}
	b := slices.DeleteFunc(e.Batch, func(rm graph.RouteMetrics) bool { return !m.has[rm.ID] })
	for i := range b {
		if m.a.straddles(b[i].Src, b[i].Dst, b[i].Metrics) {
			b[i].Metrics = graph.Metrics{}
		}
	}
	m.a.g.ImportMetrics(m.name, b)
	m.a.met.batchRoutes.Add(float64(len(b)))
	m.lastID = id
	m.seen(id)
	return "", nil
}

// applyDeltas applies the delta form of route-batch event id: checked
// first, so a bad one changes nothing and brings a fresh snapshot.
func (m *member) applyDeltas(d graph.DeltaBatch, id uint64) (string, error) {
	if m.form != api.BatchFormDeltas {
		return reasonInconsistent, fmt.Errorf("route-batch event %d in delta form on a stream without %s", id, api.BatchFormHeader)
	}
	if err := d.Validate(); err != nil {
		return reasonBadEvent, fmt.Errorf("route-batch event %d: %w", id, err)
	}
	d.Routes = slices.DeleteFunc(d.Routes, func(rd graph.RouteDelta) bool { return !m.has[rd.ID] })
	n, err := m.a.g.ImportDeltas(m.name, d, m.a.straddles)
	if err != nil {
		return reasonInconsistent, fmt.Errorf("route-batch event %d: %w", id, err)
	}
	m.a.met.batchRoutes.Add(float64(n))
	return "", nil
}

func routeID(r graph.Route) string {
	if r.ID != "" {
		return r.ID
	}
	return graph.RouteID(r.Hops)
}

func (m *member) importRoute(r graph.Route) {
	m.has[routeID(r)] = true
	if len(r.Hops) < 2 || len(r.Keys) == 0 {
		return // nothing the graph could hold or later remove by key
	}
	r.ID = routeID(r)
	r.Origin = m.name
	if m.a.straddlesRestart(r) {
		r.Metrics = graph.Metrics{}
	}
	m.a.g.ImportRoute(m.name, r)
	// The graph dropped the keys that left r and moved those that came from
	// another route: mirror it.
	for _, k := range m.byRoute[r.ID] {
		if m.keys[k] == r.ID && !slices.Contains(r.Keys, k) {
			delete(m.keys, k)
		}
	}
	for _, k := range r.Keys {
		if prev, ok := m.keys[k]; ok && prev != r.ID {
			ks := slices.DeleteFunc(m.byRoute[prev], func(x graph.RouteKey) bool { return x == k })
			if len(ks) == 0 {
				delete(m.byRoute, prev)
			} else {
				m.byRoute[prev] = ks
			}
		}
		m.keys[k] = r.ID
	}
	m.byRoute[r.ID] = slices.Clone(r.Keys)
	m.nroutes.Store(int64(len(m.byRoute)))
}

func (m *member) removeRoute(id string) {
	for _, k := range m.byRoute[id] {
		if m.keys[k] == id {
			m.a.g.RemoveImportedRoute(m.name, k)
			delete(m.keys, k)
		}
	}
	delete(m.byRoute, id)
	delete(m.has, id)
	m.nroutes.Store(int64(len(m.byRoute)))
}

// applySnapshot makes the member's contribution equal to s: every route in
// s is imported (moving keys as needed), then keys s no longer has go.
func (m *member) applySnapshot(s graph.Snapshot) {
	old := m.keys
	m.keys = map[graph.RouteKey]string{}
	m.byRoute = map[string][]graph.RouteKey{}
	m.has = map[string]bool{}
	for _, r := range s.Routes {
		m.importRoute(r)
	}
	for k := range old {
		if _, ok := m.keys[k]; !ok {
			m.a.g.RemoveImportedRoute(m.name, k)
		}
	}
	m.nroutes.Store(int64(len(m.byRoute)))
}
