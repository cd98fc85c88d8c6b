package api

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dnms/dnms/internal/graph"
)

// apiMetrics are the API's own counters.
type apiMetrics struct {
	requests        *prometheus.CounterVec
	streams         *prometheus.GaugeVec
	events          *prometheus.CounterVec
	resyncs         *prometheus.CounterVec
	streamsRejected *prometheus.CounterVec // reason
	authFailures    prometheus.Counter
	scrapesRejected prometheus.Counter
	connsRejected   *prometheus.CounterVec // reason (connstate.go)
}

func newUnregisteredMetrics() *apiMetrics {
	m := &apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_api_requests_total",
			Help: "HTTP requests answered by the dnms API, by handler and status code.",
		}, []string{"handler", "code"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnms_api_event_streams",
			Help: "Open server-sent event streams, by graph view (agent or aggregator).",
		}, []string{"view"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_api_events_sent_total",
			Help: "Server-sent events written to clients (snapshots included), by graph view.",
		}, []string{"view"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_api_event_resyncs_total",
			Help: "Event streams ended with a resync event because the client fell behind, by graph view.",
		}, []string{"view"}),
		streamsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_api_event_streams_rejected_total",
			Help: "Event stream requests refused, by reason: total (every slot open to the client is taken) or per_client (the client address holds its share).",
		}, []string{"reason"}),
		connsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_api_connections_rejected_total",
			Help: "HTTP connections that ended without a well-formed request, by reason: no_request (garbage, a stalled or oversized header) or tls_handshake.",
		}, []string{"reason"}),
		scrapesRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_api_scrapes_rejected_total",
			Help: "/metrics requests refused after waiting in the scrape queue.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_api_auth_failures_total",
			Help: "Requests refused for a missing or wrong bearer token.",
		}),
	}
	for _, r := range []string{rejectTotal, rejectPerClient} {
		m.streamsRejected.WithLabelValues(r)
	}
	for _, r := range []string{connNoRequest, connTLSHandshake} {
		m.connsRejected.WithLabelValues(r)
	}
	return m
}

func newAPIMetrics(reg prometheus.Registerer) (*apiMetrics, error) {
	m := newUnregisteredMetrics()
	for _, c := range []prometheus.Collector{m.requests, m.streams, m.events, m.resyncs, m.streamsRejected, m.authFailures, m.scrapesRejected, m.connsRejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *apiMetrics) instrument(name string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"handler": name}), h)
}

// Graph metric descriptors. Route series are labelled by flow (src, dst,
// source port), never by route hash: their number is bounded by
// peers x ports on an agent. Link series are bounded by the links of the
// fabric the routes cross (plus one placeholder link per silent hop).
var (
	routeLabels = []string{"src", "dst", "port"}
	linkLabels  = []string{"view", "src", "dst"}

	descRouteSamples = prometheus.NewDesc("dnms_route_samples",
		"Samples in the route's metric ring (the window the other dnms_route_* figures cover).", routeLabels, nil)
	descRouteLoss = prometheus.NewDesc("dnms_route_loss_ratio",
		"Fraction of the ring's probes lost on this flow: all, or lost on the forward or reverse path.",
		append(append([]string{}, routeLabels...), "direction"), nil)
	descRouteRTTMin = prometheus.NewDesc("dnms_route_rtt_min_seconds",
		"Smallest round-trip time in the ring (reflector time removed).", routeLabels, nil)
	descRouteRTTAvg = prometheus.NewDesc("dnms_route_rtt_avg_seconds",
		"Mean round-trip time in the ring.", routeLabels, nil)
	descRouteRTTP50 = prometheus.NewDesc("dnms_route_rtt_p50_seconds",
		"Median round-trip time in the ring.", routeLabels, nil)
	descRouteRTTP99 = prometheus.NewDesc("dnms_route_rtt_p99_seconds",
		"99th percentile round-trip time in the ring.", routeLabels, nil)
	descRouteRTTMax = prometheus.NewDesc("dnms_route_rtt_max_seconds",
		"Largest round-trip time in the ring.", routeLabels, nil)
	descRouteJitter = prometheus.NewDesc("dnms_route_jitter_seconds",
		"RFC 3550 interarrival jitter of the round-trip time.", routeLabels, nil)
	descRouteRTTStddev = prometheus.NewDesc("dnms_route_rtt_stddev_seconds",
		"Standard deviation of the round-trip time in the ring.", routeLabels, nil)

	descLinkSuspicion = prometheus.NewDesc("dnms_link_suspicion",
		"Seed fault score of a directed link: mean loss of routes through it minus mean loss of routes not through it (sample-weighted).",
		linkLabels, nil)
	descLinkEstLoss = prometheus.NewDesc("dnms_link_estimated_loss_ratio",
		"Loss rate the explain-away estimator attributes to the link.", linkLabels, nil)
	descLinkFaulty = prometheus.NewDesc("dnms_link_faulty",
		"1 when the estimator's verdict on the link is faulty, else 0.", linkLabels, nil)
	descLinkRoutes = prometheus.NewDesc("dnms_link_routes",
		"Routes through the link that carry samples (evidence behind the link's scores).", linkLabels, nil)
	descLinkDelayExcess = prometheus.NewDesc("dnms_link_delay_excess_seconds",
		"One-way delay the estimator attributes to the link beyond the routes' RTT baselines.", linkLabels, nil)

	descGraphNodes = prometheus.NewDesc("dnms_graph_nodes",
		"Nodes in the graph.", []string{"view"}, nil)
	descGraphLinks = prometheus.NewDesc("dnms_graph_links",
		"Directed links in the graph.", []string{"view"}, nil)
	descGraphRoutes = prometheus.NewDesc("dnms_graph_routes",
		"Routes in the graph.", []string{"view"}, nil)
	descGraphEvents = prometheus.NewDesc("dnms_graph_events_total",
		"Id of the graph's latest change event (ids increase by one per event).", []string{"view"}, nil)
)

// graphCollector reads the graphs at scrape time.
type graphCollector struct {
	agent, aggregator Graph
	// routes: export the per-route series and every link of the agent's
	// view (-metricsDetail=route). Off, the agent's per-peer series
	// (internal/pinger) carry loss and latency, and its link series are
	// only those of links the estimator does not call ok: the series per
	// agent stay bounded by the probe budget, not by peers × ports or by
	// the links its routes cross. The aggregator view always exports every
	// link: it is the cluster's link health.
	routes bool
}

func newGraphCollector(agent, aggregator Graph) *graphCollector {
	return &graphCollector{agent: agent, aggregator: aggregator, routes: true}
}

var _ prometheus.Collector = (*graphCollector)(nil)

func (c *graphCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descRouteSamples, descRouteLoss, descRouteRTTMin, descRouteRTTAvg, descRouteRTTP50,
		descRouteRTTP99, descRouteRTTMax, descRouteJitter, descRouteRTTStddev,
		descLinkSuspicion, descLinkEstLoss, descLinkFaulty, descLinkRoutes, descLinkDelayExcess,
		descGraphNodes, descGraphLinks, descGraphRoutes, descGraphEvents,
	} {
		ch <- d
	}
}

func (c *graphCollector) Collect(ch chan<- prometheus.Metric) {
	if c.routes {
		snap := snapshotOf(c.agent)
		collectSize(ch, "agent", sizeOfSnapshot(snap))
		collectRoutes(ch, snap)
	} else {
		collectSize(ch, "agent", sizeOf(c.agent))
	}
	collectLinks(ch, "agent", c.agent.Health(), !c.routes)
	if c.aggregator != nil {
		// The aggregator's routes are every agent's routes (peers² x ports):
		// each agent exports its own, so only sizes and links here.
		collectSize(ch, "aggregator", sizeOf(c.aggregator))
		collectLinks(ch, "aggregator", c.aggregator.Health(), false)
	}
}

// sizer is a graph that counts itself without a snapshot (*graph.Graph).
type sizer interface {
	Size() graph.Size
}

// sizeOf is g's size, counted without copying g when it can.
func sizeOf(g Graph) graph.Size {
	if s, ok := g.(sizer); ok {
		return s.Size()
	}
	return sizeOfSnapshot(g.Snapshot())
}

func sizeOfSnapshot(s graph.Snapshot) graph.Size {
	return graph.Size{EventID: s.EventID, Nodes: len(s.Nodes), Links: len(s.Links), Routes: len(s.Routes)}
}

func collectSize(ch chan<- prometheus.Metric, view string, s graph.Size) {
	ch <- prometheus.MustNewConstMetric(descGraphNodes, prometheus.GaugeValue, float64(s.Nodes), view)
	ch <- prometheus.MustNewConstMetric(descGraphLinks, prometheus.GaugeValue, float64(s.Links), view)
	ch <- prometheus.MustNewConstMetric(descGraphRoutes, prometheus.GaugeValue, float64(s.Routes), view)
	ch <- prometheus.MustNewConstMetric(descGraphEvents, prometheus.CounterValue, float64(s.EventID), view)
}

func collectRoutes(ch chan<- prometheus.Metric, s graph.Snapshot) {
	seen := make(map[graph.RouteKey]bool)
	for _, r := range s.Routes {
		m := r.Metrics
		for _, k := range r.Keys {
			if seen[k] || !k.Src.IsValid() || !k.Dst.IsValid() {
				continue // a key on two routes would be a duplicate series
			}
			seen[k] = true
			lv := []string{k.Src.String(), k.Dst.String(), strconv.Itoa(int(k.SrcPort))}
			gauge(ch, descRouteSamples, float64(m.Samples), lv...)
			if m.Samples <= 0 {
				continue
			}
			gauge(ch, descRouteLoss, m.Loss, append(lv, "all")...)
			gauge(ch, descRouteLoss, m.LossForward, append(lv, "forward")...)
			gauge(ch, descRouteLoss, m.LossReverse, append(lv, "reverse")...)
			if m.Samples-m.Lost <= 0 {
				continue // every probe lost: no latency figures
			}
			gauge(ch, descRouteRTTMin, m.RTTMin, lv...)
			gauge(ch, descRouteRTTAvg, m.RTTAvg, lv...)
			gauge(ch, descRouteRTTP50, m.RTTP50, lv...)
			gauge(ch, descRouteRTTP99, m.RTTP99, lv...)
			gauge(ch, descRouteRTTMax, m.RTTMax, lv...)
			gauge(ch, descRouteJitter, m.JitterRFC3550, lv...)
			gauge(ch, descRouteRTTStddev, m.JitterStddev, lv...)
		}
	}
}

// collectLinks exports the link rows; onlyBad skips links whose verdict is
// ok.
func collectLinks(ch chan<- prometheus.Metric, view string, rows []graph.LinkHealth, onlyBad bool) {
	seen := make(map[graph.LinkID]bool, len(rows))
	for _, h := range rows {
		if onlyBad && h.Verdict == graph.VerdictOK {
			continue
		}
		id := graph.LinkID{Src: h.Src, Dst: h.Dst}
		if seen[id] {
			continue
		}
		seen[id] = true
		faulty := 0.0
		if h.Verdict == graph.VerdictFaulty {
			faulty = 1
		}
		gauge(ch, descLinkSuspicion, h.Suspicion, view, h.Src, h.Dst)
		gauge(ch, descLinkEstLoss, h.EstimatedLoss, view, h.Src, h.Dst)
		gauge(ch, descLinkFaulty, faulty, view, h.Src, h.Dst)
		gauge(ch, descLinkRoutes, float64(h.RoutesThrough), view, h.Src, h.Dst)
		gauge(ch, descLinkDelayExcess, h.EstimatedDelaySeconds, view, h.Src, h.Dst)
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, lv ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
}
