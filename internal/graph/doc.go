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
//	func (g *Graph) AddSample(key RouteKey, s Sample) // no-op if the key has no route
//	func (g *Graph) RouteKeys() []RouteKey
//	// Aggregator side: routes whose metrics were computed elsewhere.
//	func (g *Graph) ImportRoute(origin string, r Route) // upsert, keeps r.Metrics
//	func (g *Graph) RemoveImportedRoute(origin string, key RouteKey)
//	func (g *Graph) RemoveOrigin(origin string)
//	// Readers (safe concurrently with writers):
//	func (g *Graph) Snapshot() Snapshot
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
package graph
