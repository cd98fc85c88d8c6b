// Package cluster owns gossip membership (hashicorp/memberlist): joining the
// seeds with retry, the versioned node meta every member advertises (role,
// HTTP port, ping port, software version), gossip encryption, and turning
// memberlist's join/leave/update callbacks into ordered, de-duplicated
// PeerJoin/PeerLeave calls on the Handlers that consume them (the mapper and
// the aggregator).
//
// A member whose meta cannot be decoded or is incompatible with ours (other
// meta version, other ping port, other major software version) stays in the
// gossip pool — so rolling upgrades still converge — but is logged once and
// never reported to handlers, so it is neither traced nor pinged.
//
// Memberlist calls its delegates with its own locks held, so the delegates
// here only copy what they are given into a queue; one goroutine decodes,
// filters and delivers in order.
package cluster
