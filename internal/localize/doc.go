// Package localize is the estimator behind /v1/graph/edges/health: routes
// with their loss counts and RTT excess go in, one row per directed link with
// its seed score, estimated loss and delay, and a verdict come out. It knows
// nothing of where the routes came from (an agent, the aggregator or a saved
// document) and does no I/O.
//
// Run is a list of steps, one file each:
//
//   - index (index.go): intern node IDs, number the links in (src, dst)
//     order, list each route's links.
//   - split directions (direction.go): charge forward losses to a route's
//     links and reverse losses to its reverse route's links; keep the round
//     trip when no direction is known; one round-trip delay observation per
//     route.
//   - seed score (seed.go): AvgLossThrough − AvgLossNotThrough per link.
//   - fit (fit.go): an L1-penalised explain-away fit selects the links that
//     explain the losses, then an unpenalised refit of the selected links
//     gives unbiased loss estimates; delay.go does the same, additive and
//     non-negative, for the RTT excess.
//   - verdicts (verdict.go): a one-sided likelihood-ratio test of each
//     link's losses against what the other links explain, with
//     Benjamini–Hochberg false-discovery control across links.
//
// Estimator (estimator.go) runs the same steps again and again on a route
// set that changes a little (the aggregator's health after every change
// batch): it reuses the index when only counts changed and starts the fit
// from the last run's estimates.
package localize
