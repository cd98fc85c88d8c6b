// Package api owns dnms's HTTP surface: the JSON endpoints over the agent's
// graph (and the aggregator's, when there is one), the server-sent event
// stream of graph changes, bearer-token auth, CORS, request limits, the
// Prometheus exposition of the graph (/metrics), and the offline
// `dnms health` command, which runs the same health code over a saved
// /v1/graph document.
//
// It holds no business logic: every figure it serves comes from
// internal/graph. docs/api.md documents every endpoint, the SSE protocol, the
// metrics and their cardinality, and the health file format.
package api
