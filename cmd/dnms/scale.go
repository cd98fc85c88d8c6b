package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/dnms/dnms/internal/plan"
)

// scaleConfig holds the probe budget flags: how many peers to probe and how
// fast (internal/plan), and how much detail /metrics exports.
type scaleConfig struct {
	PingPeers       int
	PeerRotate      time.Duration
	ProbeRate       float64
	TraceRate       float64
	TraceRouterRate float64
	MetricsDetail   string // peer|route
	// AggregateInterval: how often this member sends an aggregator one
	// batch of route metrics (internal/api BatchInterval); 0 = every update.
	AggregateInterval time.Duration
	// AggregateDeltas: an aggregator asks members for delta batches
	// (changed flow-state buckets) instead of window metrics.
	AggregateDeltas bool
	// PingEveryPort pings every mapped source port, not one per distinct
	// (forward route, reverse route) pair (internal/pinger).
	PingEveryPort bool
}

func addScaleFlags(fs *flag.FlagSet, s *scaleConfig) {
	fs.IntVar(&s.PingPeers, "pingPeers", 64, "peers each agent probes (rack peers, coverage, rotation); 0 = every peer")
	fs.DurationVar(&s.PeerRotate, "peerRotate", 10*time.Minute, "how often the non-rack peers rotate")
	fs.Float64Var(&s.ProbeRate, "probeRate", 1000, "cap on pings per second per agent")
	fs.Float64Var(&s.TraceRate, "traceRate", 50, "cap on trace probes per second per agent")
	fs.Float64Var(&s.TraceRouterRate, "traceRouterRate", 500, "cluster-wide cap on TTL-expired answers per second asked of one router; each agent takes its share (rate / members)")
	fs.StringVar(&s.MetricsDetail, "metricsDetail", "peer", "series on /metrics: peer (per-peer loss and latency) or route (also per route)")
	fs.BoolVar(&s.PingEveryPort, "pingEveryPort", false, "ping every mapped source port; by default the ports to a peer that take the same route both ways (forward, and the peer's route back) share one ping schedule and take turns")
	fs.BoolVar(&s.AggregateDeltas, "aggregateDeltas", false, "aggregator: ask members for delta batches (the flow-state buckets that changed, kept in a replica here: 0.4–0.8× the bytes, ≈ 2.5× the aggregator's memory) instead of each changed route's window metrics")
	fs.DurationVar(&s.AggregateInterval, "aggregateInterval", 5*time.Second, "how often this member sends each aggregator one batch of its routes' metrics, at a phase set by its node name (path changes and removals go at once); 0 sends every update as it comes")
}

func (s scaleConfig) validate() error {
	switch {
	case s.PingPeers < 0:
		return fmt.Errorf("-pingPeers must be 0 (every peer) or positive, got %d", s.PingPeers)
	case s.PeerRotate <= 0:
		return fmt.Errorf("-peerRotate must be positive, got %s", s.PeerRotate)
	case !(s.ProbeRate > 0):
		return fmt.Errorf("-probeRate must be positive, got %v", s.ProbeRate)
	case !(s.TraceRate > 0):
		return fmt.Errorf("-traceRate must be positive, got %v", s.TraceRate)
	case !(s.TraceRouterRate > 0):
		return fmt.Errorf("-traceRouterRate must be positive, got %v", s.TraceRouterRate)
	case s.AggregateInterval != 0 && (s.AggregateInterval < 100*time.Millisecond || s.AggregateInterval > time.Hour):
		return fmt.Errorf("-aggregateInterval must be 0 or between 100ms and 1h, got %s", s.AggregateInterval)
	case s.MetricsDetail != "peer" && s.MetricsDetail != "route":
		return fmt.Errorf("-metricsDetail must be peer or route, got %q", s.MetricsDetail)
	}
	return nil
}

// planConfig is the probe plan the flags ask for.
func (s scaleConfig) planConfig(self string) plan.Config {
	c := plan.DefaultConfig()
	c.Self, c.Budget, c.Rotate = self, s.PingPeers, s.PeerRotate
	return c
}

// caps are the agent's running rate caps, reported in /healthz.
type caps struct {
	pings, traces *plan.Rate
	routers       *plan.RouterBudget
}

func newCaps(s scaleConfig) *caps {
	return &caps{
		pings:   plan.NewRate(s.ProbeRate),
		traces:  plan.NewRate(s.TraceRate),
		routers: plan.NewRouterBudget(s.TraceRouterRate),
	}
}

// status is the /healthz "probeCaps" object: whether a cap held probes
// back in the last minute (then it, not the configured interval, sets the
// pace) and how many in all.
func (c *caps) status() capsHealth {
	now := time.Now()
	var h capsHealth
	h.PingsStretched, h.PingsHeld = c.pings.Stretched(now, time.Minute)
	h.TracesStretched, h.TracesHeld = c.traces.Stretched(now, time.Minute)
	h.RouterBudgetStretched = c.routers.Stretched(now, time.Minute)
	return h
}
