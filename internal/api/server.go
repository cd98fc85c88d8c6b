package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/sseid"
	"github.com/dnms/dnms/internal/ui"
)

// Graph is what the API reads from a graph. *graph.Graph implements it; the
// agent's graph and the aggregator's graph are served by the same handlers.
type Graph interface {
	Snapshot() graph.Snapshot
	Health() []graph.LinkHealth
	Subscribe(after uint64, buf int) *graph.Subscription
}

// Config configures the HTTP server. Zero fields take DefaultConfig's values
// where a zero would make no sense (limits, timeouts); Token and AllowOrigin
// are used as given.
type Config struct {
	// Addr is the listen address (-httpAddr).
	Addr string
	// AllowOrigin is sent as Access-Control-Allow-Origin on every response
	// (-httpAllowOrigin). Empty sends no CORS headers.
	AllowOrigin string
	// Token, when set, is required as "Authorization: Bearer <token>" on every
	// endpoint except /healthz and CORS preflights (-httpToken).
	Token string

	// RouteMetrics exports per-route series on /metrics
	// (-metricsDetail=route); off, loss and latency are per peer.
	RouteMetrics bool

	// MaxStreams bounds concurrent SSE streams over all graphs; the next
	// client gets 503. ReservedStreams of them are only for authenticated
	// aggregators (a verified cluster client certificate), and one client
	// address holds at most MaxStreamsPerClient.
	MaxStreams          int
	ReservedStreams     int
	MaxStreamsPerClient int
	// MaxConns caps open HTTP connections (-httpMaxConns); more wait in
	// the kernel's accept queue. Keep-alive connections are reused.
	MaxConns int
	// MaxScrapes bounds concurrent /metrics requests; more wait up to
	// ScrapeQueueWait for a turn, then get 503.
	MaxScrapes      int
	ScrapeQueueWait time.Duration
	// TLS, when set, serves https with it (the cluster certificate, see
	// cluster.ClusterTLS.ServerConfig).
	TLS *tls.Config
	// WebConfigFile, when set, is a Prometheus exporter-toolkit web config
	// (TLS, client CA, basic auth): -web.config.file. It replaces TLS.
	WebConfigFile string
	// StreamBuffer is each stream's event buffer in the graph subscription;
	// a client that falls further behind is told to resync.
	StreamBuffer int
	// Heartbeat is the interval of ": hb" comment lines on idle streams.
	Heartbeat time.Duration
	// StreamWriteTimeout bounds one write to an SSE client: a client whose
	// socket does not drain in that time is dropped. The server has no
	// overall WriteTimeout, which would cut every stream.
	StreamWriteTimeout time.Duration
	// BatchInterval is how often a stream that asks for batches
	// (?batch=1&batch=2, what the aggregator sends; see BatchFormHeader)
	// gets one route-batch event with what changed since the last one
	// (-aggregateInterval); BatchPhase (see BatchPhase) places this
	// member's batches within the interval. 0 ignores ?batch=: every
	// metrics update is its own route-update event.
	BatchInterval time.Duration
	BatchPhase    time.Duration
	// Retry is the reconnect delay suggested to SSE clients ("retry:").
	Retry time.Duration
	// Instance names this server's process in SSE event ids
	// ("<instance>-<seq>"). Empty: random, which is what a process wants.
	Instance string

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// WriteTimeout applies to plain JSON responses (not to SSE streams).
	WriteTimeout    time.Duration
	IdleTimeout     time.Duration
	MaxHeaderBytes  int
	ShutdownTimeout time.Duration

	// Registerer receives the graph collector and the API's own metrics;
	// Gatherer is what /metrics exposes. When both are nil a private
	// registry is used for both. When only Registerer is set and it is a
	// *prometheus.Registry, it is also the Gatherer.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer

	Logger *slog.Logger
}

// DefaultConfig returns the seed defaults.
func DefaultConfig() Config {
	return Config{
		Addr:                ":12345",
		AllowOrigin:         "*",
		MaxStreams:          64,
		ReservedStreams:     4,
		MaxStreamsPerClient: 8,
		MaxConns:            1024,
		MaxScrapes:          4,
		ScrapeQueueWait:     5 * time.Second,
		StreamBuffer:        1024,
		Heartbeat:           2 * time.Second,
		StreamWriteTimeout:  30 * time.Second,
		Retry:               2 * time.Second,
		ReadHeaderTimeout:   5 * time.Second,
		ReadTimeout:         10 * time.Second,
		WriteTimeout:        30 * time.Second,
		IdleTimeout:         120 * time.Second,
		MaxHeaderBytes:      16 << 10,
		ShutdownTimeout:     5 * time.Second,
	}
}

// Deps are the parts the server reads. Only Graph is required.
type Deps struct {
	// Graph is the agent's graph: /v1/graph..., /v1/events/graph.
	Graph Graph
	// Aggregator, when non-nil, is served under /v1/aggregator/graph... and
	// /v1/aggregator/events/graph by the same handlers.
	Aggregator Graph
	// MapperPeers and MapperRouteMap return the mapper's JSON documents for
	// /v1/mapper/peers and /v1/mapper/routemap; nil answers 404.
	MapperPeers    func() any
	MapperRouteMap func() any
	// MapperRoutesTo returns the mapper's routes towards one peer for
	// /v1/mapper/routes-to/{addr} (routesto.go); nil answers 404.
	MapperRoutesTo func(peer netip.Addr) any
	// AggregatorMembers returns the aggregator's member streams (state,
	// last event, reason, stale routes) for /v1/aggregator/members.
	AggregatorMembers func() any
	// Meta returns extra /healthz fields (version, time source, eBPF state).
	// A JSON object is merged into the /healthz object; anything else is
	// served under "meta".
	Meta func() any

	// Targets and Target serve /v1/targets and /v1/targets/{name}; Paths
	// serves /v1/paths?target=...; Discovery, on an aggregator, serves
	// /v1/aggregator/sd (Prometheus HTTP SD). nil answers 404.
	Targets   func() any
	Target    func(name string) (any, bool)
	Paths     func(target string) any
	Discovery func() []SDGroup
}

// Server is the HTTP API. Build it with New, serve it with Run or Serve.
type Server struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	handler  http.Handler
	gatherer prometheus.Gatherer
	metrics  *apiMetrics
	started  time.Time
	instance string // SSE id prefix

	streams *streamLimiter

	closeOnce sync.Once
	closing   chan struct{} // closed by Close: SSE streams end

	// beforeEvent, when set (tests only), runs before each SSE event is
	// written, to simulate a slow client deterministically.
	beforeEvent func()
}

// New builds the server and registers its metrics (the graph collector and
// the API's own) with cfg.Registerer.
func New(cfg Config, deps Deps) (*Server, error) {
	if isNil(deps.Graph) {
		return nil, errors.New("api: Deps.Graph is required")
	}
	if isNil(deps.Aggregator) {
		deps.Aggregator = nil
	}
	cfg = withDefaults(cfg)
	if cfg.Registerer == nil && cfg.Gatherer == nil {
		reg := prometheus.NewRegistry()
		cfg.Registerer, cfg.Gatherer = reg, reg
	}
	if cfg.Gatherer == nil {
		g, ok := cfg.Registerer.(prometheus.Gatherer)
		if !ok {
			return nil, errors.New("api: Config.Gatherer is required when Registerer is not a Gatherer")
		}
		cfg.Gatherer = g
	}
	s := &Server{
		cfg:      cfg,
		deps:     deps,
		log:      cfg.Logger,
		gatherer: cfg.Gatherer,
		started:  time.Now(),
		instance: cfg.Instance,
		streams:  newStreamLimiter(cfg.MaxStreams, cfg.MaxStreamsPerClient, cfg.ReservedStreams),
		closing:  make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.instance == "" {
		s.instance = sseid.NewInstance()
	}
	if cfg.Registerer != nil {
		m, err := newAPIMetrics(cfg.Registerer)
		if err != nil {
			return nil, err
		}
		s.metrics = m
		gc := newGraphCollector(deps.Graph, deps.Aggregator)
		gc.routes = cfg.RouteMetrics
		if err := cfg.Registerer.Register(gc); err != nil {
			return nil, fmt.Errorf("api: register graph collector: %w", err)
		}
	} else {
		s.metrics = newUnregisteredMetrics()
	}
	s.handler = s.routes()
	return s, nil
}

func withDefaults(cfg Config) Config {
	d := DefaultConfig()
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = d.MaxStreams
	}
	if cfg.ReservedStreams < 0 {
		cfg.ReservedStreams = 0
	}
	if cfg.MaxStreamsPerClient <= 0 {
		cfg.MaxStreamsPerClient = d.MaxStreamsPerClient
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = d.MaxConns
	}
	if cfg.MaxScrapes <= 0 {
		cfg.MaxScrapes = d.MaxScrapes
	}
	if cfg.ScrapeQueueWait <= 0 {
		cfg.ScrapeQueueWait = d.ScrapeQueueWait
	}
	if cfg.StreamBuffer <= 0 {
		cfg.StreamBuffer = d.StreamBuffer
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = d.Heartbeat
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = d.StreamWriteTimeout
	}
	if cfg.Retry <= 0 {
		cfg.Retry = d.Retry
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = d.ReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = d.WriteTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = d.IdleTimeout
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = d.ShutdownTimeout
	}
	return cfg
}

// isNil reports whether g is nil or a typed nil pointer (a nil *graph.Graph
// passed as Deps.Aggregator means "no aggregator").
func isNil(g Graph) bool {
	if g == nil {
		return true
	}
	v := reflect.ValueOf(g)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// Handler is the whole API (middleware included), for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on Config.Addr and serves until ctx is done, then shuts down
// gracefully: SSE streams end, in-flight requests get ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done (see Run). It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ct := newConnTracker(func() { s.metrics.connsRejected.WithLabelValues(connNoRequest).Inc() })
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ConnState:         ct.state,
		ConnContext:       ct.connContext,
		ErrorLog: newServerLog(s.log.Handler(), func() {
			s.metrics.connsRejected.WithLabelValues(connTLSHandshake).Inc()
		}),
	}
	errc := make(chan error, 1)
	ln = netutil.LimitListener(ln, s.cfg.MaxConns)
	go func() { errc <- s.serve(srv, ln) }()
	s.log.Info("http api listening", "addr", ln.Addr().String(), "auth", s.cfg.Token != "",
		"tls", s.cfg.TLS != nil || s.cfg.WebConfigFile != "", "maxConns", s.cfg.MaxConns)

	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	s.Close() // end SSE streams so Shutdown does not wait for them
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("api: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serve: %w", err)
	}
	return nil
}

// Close ends every open SSE stream (each client gets a final comment and the
// connection ends). Run and Serve call it on shutdown; it is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	return nil
}

// routes builds the router and wraps it with CORS and auth.
func (s *Server) routes() http.Handler {
	r := httprouter.New()
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s", req.URL.Path))
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusMethodNotAllowed,
			fmt.Sprintf("method %s not allowed on %s (allowed: %s)", req.Method, req.URL.Path, w.Header().Get("Allow")))
	})
	r.GlobalOPTIONS = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	r.PanicHandler = func(w http.ResponseWriter, req *http.Request, v any) {
		s.log.Error("http handler panic", "path", req.URL.Path, "panic", v)
		writeError(w, http.StatusInternalServerError, "internal error")
	}

	s.graphRoutes(r, "/v1/graph", "/v1/events/graph", s.deps.Graph, "agent")
	if s.deps.Aggregator != nil {
		s.graphRoutes(r, "/v1/aggregator/graph", "/v1/aggregator/events/graph", s.deps.Aggregator, "aggregator")
	}
	if s.deps.AggregatorMembers != nil {
		s.get(r, "/v1/aggregator/members", "aggregator_members", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, r, s.deps.AggregatorMembers())
		}))
	}
	s.get(r, "/v1/mapper/peers", "mapper_peers", s.mapperHandler("peers", s.deps.MapperPeers))
	s.get(r, "/v1/mapper/routemap", "mapper_routemap", s.mapperHandler("routemap", s.deps.MapperRouteMap))
	s.routesToRoutes(r)
	s.targetRoutes(r)
	s.get(r, "/healthz", "healthz", http.HandlerFunc(s.healthz))
	s.get(r, "/metrics", "metrics", s.metricsHandler())
	// The web page: open without the token (it holds no data; its data
	// requests carry the token).
	page := ui.Handler()
	s.get(r, "/", "ui", page)
	s.get(r, "/ui/*file", "ui", page)

	return s.middleware(r)
}

func (s *Server) graphRoutes(r *httprouter.Router, prefix, events string, g Graph, view string) {
	s.get(r, prefix, view+"_graph", s.graphHandler(g))
	s.get(r, prefix+"/nodes", view+"_nodes", s.nodesHandler(g))
	s.get(r, prefix+"/edges", view+"_edges", s.edgesHandler(g))
	s.get(r, prefix+"/edges/health", view+"_health", s.healthHandler(g))
	s.get(r, prefix+"/routes", view+"_routes", s.routesHandler(g))
	s.get(r, prefix+"/layout", view+"_layout", s.layoutHandler(g))
	// SSE is registered for GET only (HEAD makes no sense on a stream).
	r.Handler(http.MethodGet, events, s.metrics.instrument(view+"_events", s.eventsHandler(g, view)))
}

// get registers h for GET and HEAD, instrumented under name.
func (s *Server) get(r *httprouter.Router, path, name string, h http.Handler) {
	ih := s.metrics.instrument(name, h)
	r.Handler(http.MethodGet, path, ih)
	r.Handler(http.MethodHead, path, ih)
}
