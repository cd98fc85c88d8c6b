// Package graph owns nodes, directed links, routes, per-route metrics,
// per-link health (fault localization) and the change-event log.
//
// It is pure (no I/O) and used unchanged by the agent and the aggregator.
//
// Contract used by other packages (implemented in this package):
//
//	func DefaultConfig() Config
//	func New(cfg Config) *Graph
//	// Agent side (mapper and pinger write):
//	func (g *Graph) SetRoute(key RouteKey, hops []Hop) (routeID string, change *PathChange)
//	func (g *Graph) RemoveRoute(key RouteKey)
//	func (g *Graph) RemoveHost(addr netip.Addr)     // every route from or to addr
//	func (g *Graph) ResetPeer(addr netip.Addr, since time.Time) int // a peer restarted: empty its flow state
//	func (g *Graph) AddSample(key RouteKey, s Sample) // no-op if the key has no route
//	func (g *Graph) RouteKeys() []RouteKey
//	// Aggregator side: routes whose metrics were computed elsewhere.
//	func (g *Graph) ImportRoute(origin string, r Route) // upsert, keeps r.Metrics
//	func (g *Graph) RemoveImportedRoute(origin string, key RouteKey)
//	func (g *Graph) RemoveOrigin(origin string)
//	// Readers (safe concurrently with writers):
//	func (g *Graph) Snapshot() Snapshot       // the caller's deep copy
//	func (g *Graph) SnapshotView() *Snapshot  // shared, read-only, copied once per change
//	func (g *Graph) Size() Size               // counts and event id, no copy
//	func (g *Graph) Health() []LinkHealth
//	func HealthOf(s Snapshot) ([]LinkHealth, error) // validates (offline `dnms health`)
//	func (g *Graph) Subscribe(after uint64, buf int) *Subscription
//
// Subscribe semantics (consumed by internal/api's SSE handler):
//
//	type Subscription struct {
//		Snapshot *Snapshot  // non-nil when after==0 or after is older than the replay
//		                    // buffer: the client gets this first, then C
//		C <-chan Event      // events with ID > after (or > Snapshot.EventID)
//	}
//	func (s *Subscription) Close()
//	func (s *Subscription) Overflowed() bool // C closed because the reader fell behind:
//	                                          // tell the client to resync; writers never block
//
// Route metrics are coalesced into at most one route-update event per route
// per Config.CoalesceInterval.
//
// Implementation notes (extensions of the contract above):
//
//   - Route IDs: RouteID(hops) = first 16 hex digits of sha256 over the hop
//     strings joined by "|", silent hops written "*". A silent hop's node ID is
//     SilentID(routeID, position) = "*<routeID>/<position>", so it depends only
//     on what was traced.
//   - SetRoute adds key.Src/key.Dst when the hop list lacks them. A re-trace
//     that differs only where the new trace has silent hops is not a change
//     (the key keeps its route); one that only fills in silent hops moves the
//     key to the refined route with its flow state and no PathChange; any
//     other difference is a PathChange and the key starts a fresh state on
//     the new route (old samples describe the old path).
//   - Per-key flow state (flow.go): buckets of counters and an RTT sketch
//     (sketch.go), O(1) per sample; a route's metrics merge its keys'
//     newest buckets, in whole epochs of its samples, up to RingSize
//     samples over all its keys.
//   - Coalescing needs no goroutine: a route-update goes out on AddSample (or
//     ImportRoute) when the route's last one is at least CoalesceInterval old;
//     a held-back update goes out on the next such call or on Flush. Run(ctx)
//     calls Flush every CoalesceInterval; run it so that quiet routes publish
//     their last metrics.
//   - Events and the Route/Node/Link/PathChange values they point to are
//     shared between subscribers and the replay buffer: read-only.
//   - Health: see localize in health.go for how forward, reverse and
//     unknown-direction losses are charged, and estimate for the estimator
//     and the verdict rule. HealthConfig tunes it; Validate is the check
//     HealthOf runs.
//   - Imported routes are stored compactly (compact.go): keys as a sorted
//     slice or just their ports, an origin's routes indexed by a hash of the
//     key's (src, dst), hop strings shared with the nodes.
//   - Extra API: RouteOf(key), LastEventID(), Flush(), Run(ctx),
//     ComputeMetrics(samples), RouteID, SilentID, Validate, HealthOfConfig,
//     DefaultHealthConfig.
package graph
