// Package aggregator merges every member's graph into one: it subscribes to
// each member's /v1/events/graph server-sent event stream, applies the
// snapshot and the route events to its own *graph.Graph with the member's
// name as the route origin, reconnects with exponential backoff and
// Last-Event-ID, and takes a fresh snapshot whenever it may have missed
// something (a resync event, a gap in the event ids, an undecodable event, or
// a member that was unreachable and may have restarted).
//
// It holds no graph logic: nodes, links and health come from internal/graph
// deriving them from the imported routes, so the aggregator's health runs the
// same code as each agent's, over every agent's routes.
package aggregator
