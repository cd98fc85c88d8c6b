package graph

import (
	"net/netip"
	"time"

	"github.com/dnms/dnms/internal/localize"
)

// TimeSource is where a sample's timestamps came from: "ebpf", "kernel" or
// "user" (the same strings as probe.Source; graph does not import probe).
type TimeSource string

// RouteKey is the route map key: one flow from Src to Dst sent from source
// port SrcPort. Src and Dst are host (peer) addresses.
type RouteKey struct {
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	SrcPort uint16     `json:"srcPort"`
}

// Reverse is the key of the mirrored flow (the path the acks take).
func (k RouteKey) Reverse() RouteKey { return RouteKey{Src: k.Dst, Dst: k.Src, SrcPort: k.SrcPort} }

// Hop is one position on a traced path. Addr is invalid (zero) for a silent
// hop ("*"); the graph turns it into a placeholder node unique to its route and
// position. RTT is informational (router ICMP generation is slow).
type Hop struct {
	Addr netip.Addr    `json:"addr"`
	RTT  time.Duration `json:"-"`
}

// LossDir says which direction a lost probe was lost in, as far as the
// reflector counters tell.
type LossDir uint8

const (
	LossUnknown LossDir = 0
	LossForward LossDir = 1 // the reflector never counted it: lost on the forward route
	LossReverse LossDir = 2 // the reflector acked it, the ack never arrived: reverse route
)

// Sample is one ping on one flow, as the pinger hands it to the graph.
type Sample struct {
	Seq    uint64        `json:"seq"`
	Sent   time.Time     `json:"sent"`
	Lost   bool          `json:"lost"`
	Dir    LossDir       `json:"dir,omitempty"` // only when Lost
	RTT    time.Duration `json:"rtt,omitempty"` // (T4-T1)-(T3-T2); only when !Lost
	Source TimeSource    `json:"source"`
	// Resolves: not a new probe but the direction (Dir) of a loss of the
	// same flow reported earlier with LossUnknown, Sent its send time. A
	// loss is reported when its ping times out, at once; its direction
	// needs a later ack's reflector counters, which on a flow whose port
	// takes turns with others can come many seconds later.
	Resolves bool `json:"resolves,omitempty"`
}

// NodeKind says what a node is.
type NodeKind string

const (
	NodeHost   NodeKind = "host"   // a route endpoint (a dnms peer)
	NodeRouter NodeKind = "router" // an address that answered as a hop
	NodeSilent NodeKind = "silent" // a "*" hop: placeholder unique to route+position
)

// Node is a vertex. ID is the address for hosts and routers, and
// "*<routeID>/<position>" for silent placeholders.
type Node struct {
	ID   string     `json:"id"`
	Addr netip.Addr `json:"addr,omitzero"`
	Kind NodeKind   `json:"kind"`
}

// LinkID names a directed link by its node IDs.
type LinkID struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// Link is a directed edge a→b and how many routes use it.
type Link struct {
	LinkID
	Routes int `json:"routes"`
}

// Metrics summarise a route's window: its newest -metricRingSize samples
// over all its keys (N to N+⌈N/8⌉−1 of them, see flow.go). Durations are
// in seconds (float) in JSON; counts are integers. A lost probe never
// enters the RTT figures. On an agent, RTTP50 and RTTP99 come from a
// sketch, within 0.39% of the exact nearest-rank value; RTTMin, RTTMax,
// RTTAvg and JitterStddev are exact; JitterRFC3550 is the route's running
// RFC 3550 jitter at its newest sample.
type Metrics struct {
	Samples       int        `json:"samples"`
	Lost          int        `json:"lost"`
	LostForward   int        `json:"lostForward"`
	LostReverse   int        `json:"lostReverse"`
	Loss          float64    `json:"loss"`        // Lost/Samples
	LossForward   float64    `json:"lossForward"` // LostForward/Samples
	LossReverse   float64    `json:"lossReverse"`
	RTTMin        float64    `json:"rttMinSeconds"`
	RTTAvg        float64    `json:"rttAvgSeconds"`
	RTTP50        float64    `json:"rttP50Seconds"`
	RTTP99        float64    `json:"rttP99Seconds"`
	RTTMax        float64    `json:"rttMaxSeconds"`
	JitterRFC3550 float64    `json:"jitterRfc3550Seconds"`
	JitterStddev  float64    `json:"jitterStddevSeconds"`
	Source        TimeSource `json:"source,omitempty"`
	// RTTBaseline is the route's RTT baseline: the lowest of its keys'
	// baselines (see RTTExcessByKey), kept per hop list and flow (a path
	// change starts a new one). 0 when unknown.
	RTTBaseline float64 `json:"rttBaselineSeconds,omitempty"`
	// RTTExcessByKey is, per key of the route (in Route.Keys order), the
	// p50 RTT of the key's samples in the window minus the key's baseline
	// (the lowest 10th percentile of that flow's window samples on these
	// hops over BaselineWindow), in seconds; -1 when unknown (no RTT in
	// the window, or no baseline). The delay localization reads it.
	RTTExcessByKey []float64 `json:"rttExcessByKeySeconds,omitempty"`
	// SamplesByKey and LostByKey are, per key of the route (in Route.Keys
	// order), the samples and the lost ones in its window. A route's keys
	// share its forward hops but not their reverse paths: when the acks of
	// some keys are black-holed, only the per-key counts say which round
	// trips lost them. Empty when unknown (e.g. from an older agent).
	SamplesByKey []int `json:"samplesByKey,omitempty"`
	LostByKey    []int `json:"lostByKey,omitempty"`
	// Since is when the oldest sample in the window was sent (zero when
	// none): the aggregator does not judge from routes to or from itself
	// whose samples straddle its own restart.
	Since time.Time `json:"since,omitzero"`
}

// Route is one full hop list, source host to destination host, endpoints
// included. ID is a stable hash of the hop list (with separators). Several
// keys (source ports) that see the same hops share one route; Keys lists them.
// Metrics merge the samples of every key on the route.
type Route struct {
	ID      string     `json:"id"`
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	Hops    []string   `json:"hops"` // node IDs, Hops[0]==Src, last==Dst
	Keys    []RouteKey `json:"keys"`
	Metrics Metrics    `json:"metrics"`
	Origin  string     `json:"origin,omitempty"` // aggregator: which agent reported it
	// HopRTTs are the latest trace's RTT to each hop in seconds, aligned
	// with Hops (0 where unknown: the source, silent or inferred hops);
	// absent when the trace timed no hop. Informational: routers answer
	// ICMP on their slow path.
	HopRTTs []float64 `json:"hopRttSeconds,omitempty"`
}

// PathChange is emitted when a re-trace of a key yields different hops.
type PathChange struct {
	Key      RouteKey `json:"key"`
	OldRoute string   `json:"oldRoute"`
	NewRoute string   `json:"newRoute"`
	OldHops  []string `json:"oldHops"`
	NewHops  []string `json:"newHops"`
	HopDelta int      `json:"hopDelta"` // len(new)-len(old)
}

// Snapshot is the whole graph at one event id: the /v1/graph document and the
// input of `dnms health -f`.
type Snapshot struct {
	EventID uint64  `json:"eventId"`
	Nodes   []Node  `json:"nodes"`
	Links   []Link  `json:"edges"`
	Routes  []Route `json:"routes"`
}

// Verdict is the estimator's call on one link.
type Verdict = localize.Verdict

const (
	VerdictOK      = localize.VerdictOK
	VerdictSuspect = localize.VerdictSuspect
	VerdictFaulty  = localize.VerdictFaulty
	VerdictSlow    = localize.VerdictSlow
)

// LinkHealth is one row of /v1/graph/edges/health (see localize.Row).
type LinkHealth = localize.Row

// EventType names a change.
type EventType string

const (
	EventNodeAdd     EventType = "node-add"
	EventNodeRemove  EventType = "node-remove"
	EventLinkAdd     EventType = "link-add"
	EventLinkRemove  EventType = "link-remove"
	EventRouteAdd    EventType = "route-add"
	EventRouteUpdate EventType = "route-update" // metrics changed (coalesced)
	EventRouteRemove EventType = "route-remove"
	EventPathChange  EventType = "path-change"
)

// Event is one change. IDs increase monotonically per graph.
type Event struct {
	ID     uint64      `json:"id"`
	Type   EventType   `json:"type"`
	Time   time.Time   `json:"time"`
	Node   *Node       `json:"node,omitempty"`
	Link   *Link       `json:"link,omitempty"`
	Route  *Route      `json:"route,omitempty"` // full route incl. metrics
	Change *PathChange `json:"change,omitempty"`
	// Batch is the route-batch event's routes (batched subscriptions only,
	// see SubscribeBatched).
	Batch []RouteMetrics `json:"batch,omitempty"`
	// Deltas is the route-batch event's local routes in delta form
	// (subscriptions made with SubscribeDeltas, see delta.go).
	Deltas *DeltaBatch `json:"deltas,omitempty"`

	// coalesced is the route of a coalesced, metrics-only route-update:
	// batched subscriptions fold it into their next batch. Only set on the
	// way to emitLocked; batchable says the same in the replay buffer
	// (which must not keep the route alive).
	coalesced *routeEntry
	batchable bool
}
