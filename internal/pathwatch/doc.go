// Package pathwatch keeps the path history of traced flows (a flow is one
// source, destination and source port): every distinct hop list seen with
// its first and last sighting, per-hop RTT percentiles and the loss seen
// while it was current, and a change event each time the current path
// changes, with the old and new hops and a verdict on whether the new path
// is worse.
//
// The verdict compares the new path with the old one on three counts: hop
// count (more hops is worse), RTT p50 over the Window samples after the
// change against the Window samples before it (more than 20% and 0.5 ms
// higher is worse), and loss over the same windows (more than 1 point
// higher is worse). Hop count is known at once; RTT and loss once Window
// samples were seen on the new path: until then the event is pending.
//
// History is bounded: per flow, History distinct paths and History events
// (oldest dropped). With a state directory, the whole history is written
// atomically (temporary file, fsync, rename) to <dir>/paths.json after
// every change and at Close, and read back by New; without one nothing
// touches the disk.
//
// The package does no I/O on the network and schedules nothing: the agent's
// mapper (peer routes) and internal/targets (traced targets) feed it.
package pathwatch
