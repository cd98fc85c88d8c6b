package aggregator

import "github.com/prometheus/client_golang/prometheus"

// Stream states, the values of dnms_aggregator_streams{state}.
const (
	stateConnecting = "connecting" // dialing or waiting for the response
	stateConnected  = "connected"  // reading events
	stateBackoff    = "backoff"    // waiting before the next attempt
	stateRejected   = "rejected"   // the member did not prove it belongs; retried after backoff
)

type metrics struct {
	streams    *prometheus.GaugeVec   // state
	events     *prometheus.CounterVec // type
	reconnects prometheus.Counter
	resyncs    *prometheus.CounterVec // reason
	garbage    prometheus.Counter
	rejections *prometheus.CounterVec // reason
	// batchRoutes counts the routes that route-batch events updated.
	batchRoutes prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnms_aggregator_streams",
			Help: "Member event streams by state (connecting, connected, backoff, rejected).",
		}, []string{"state"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_aggregator_events_total",
			Help: "Events received from members' streams and applied or skipped, by SSE event type.",
		}, []string{"type"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_aggregator_reconnects_total",
			Help: "Stream connection attempts after the first one to a member.",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_aggregator_resyncs_total",
			Help: "Fresh snapshots requested because the view of a member may be stale, by reason (resync, gap, bad_event, inconsistent, restarted).",
		}, []string{"reason"}),
		garbage: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_aggregator_sse_garbage_lines_total",
			Help: "SSE lines ignored because they were not a known field, or were over-long.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_aggregator_member_rejections_total",
			Help: "Connection attempts to members that did not prove they belong to the cluster, by reason (tls, identity): no token was sent and nothing imported.",
		}, []string{"reason"}),
		batchRoutes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_aggregator_batch_routes_total",
			Help: "Route metrics applied from members' route-batch events (one per route per batch).",
		}),
	}
	for _, r := range []string{rejectTLS, rejectIdentity} {
		m.rejections.WithLabelValues(r)
	}
	for _, s := range []string{stateConnecting, stateConnected, stateBackoff, stateRejected} {
		m.streams.WithLabelValues(s)
	}
	for _, r := range []string{reasonResync, reasonGap, reasonBadEvent, reasonInconsistent, reasonRestarted} {
		m.resyncs.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.streams, m.events, m.reconnects, m.resyncs, m.garbage, m.rejections, m.batchRoutes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// eventLabel bounds the type label to the names the protocol defines.
func eventLabel(name string) string {
	switch name {
	case "snapshot", "resync", "route-add", "route-update", "route-remove", "route-batch", "path-change",
		"node-add", "node-remove", "link-add", "link-remove":
		return name
	}
	return "other"
}
