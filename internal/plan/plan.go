// Package plan owns which peers an agent probes within its budget and how
// fast it may probe them. It sends nothing: the mapper traces and the pinger
// pings the peers Select returns, under the token buckets of rate.go.
//
// # Selection
//
// With at most Budget peers (or Budget 0) every peer is probed: a small
// cluster stays a full mesh. Above it an agent probes, in this order:
//
//   - rack: every peer behind the same first-hop router (ToR), learned from
//     routes (at most Budget-1 of them, so one slot always leaves the
//     rack). Intra-rack paths are only seen by the rack's own hosts.
//   - coverage: the next RingPeers members after this one on a ring ordered
//     by a hash of the node names, as far as the budget allows. Every member
//     is then probed by its ring predecessors, so every host link carries
//     routes from several sources whatever the rotation does.
//   - rotation: the rest of the budget, spread round-robin over the other
//     racks (one peer per rack, then a second, ...) so the agent's routes
//     leave through every uplink towards as many remote racks as it can.
//     Which peers are taken changes every Rotate, deterministically from
//     the node name and the rotation epoch: a restart picks the same peers,
//     and agents rotate at different moments (the epoch boundary is offset
//     by a hash of the name).
//
// Everything is a pure function of (Config, members, time), so property
// tests check the coverage guarantee on simulated fabrics.
package plan

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Reason says why a peer is probed.
type Reason string

const (
	ReasonMesh     Reason = "mesh"     // the cluster fits the budget: every peer
	ReasonRack     Reason = "rack"     // same first-hop router as this agent
	ReasonCoverage Reason = "coverage" // ring successor: every member keeps RingPeers probers
	ReasonRotation Reason = "rotation" // rotating spread over the other racks
)

// Member is one cluster member as the plan sees it.
type Member struct {
	Name string
	Addr netip.Addr
	// Rack is the member's first-hop router (its ToR) when known; the zero
	// Addr when not. The agent learns it from its routes: the hop before the
	// peer.
	Rack netip.Addr
}

// Config configures Select. Build it from DefaultConfig.
type Config struct {
	// Self is this agent's node name; it must be among the members.
	Self string
	// SelfRack is this agent's first-hop router, zero if not known yet
	// (then no peer is a rack peer).
	SelfRack netip.Addr
	// Budget is how many peers to probe (-pingPeers); 0 means every peer.
	Budget int
	// Rotate is how long one rotation lasts (-peerRotate).
	Rotate time.Duration
	// RingPeers is how many ring successors are always probed (coverage).
	RingPeers int
}

// DefaultConfig returns the defaults of the dnms flags: 64 peers, rotated
// every 10 minutes, 3 ring successors.
func DefaultConfig() Config {
	return Config{Budget: 64, Rotate: 10 * time.Minute, RingPeers: 3}
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case c.Self == "":
		return errors.New("plan: Self is not set")
	case c.Budget < 0:
		return fmt.Errorf("plan: Budget %d must be 0 (every peer) or positive", c.Budget)
	case c.Rotate <= 0:
		return fmt.Errorf("plan: Rotate %v must be positive", c.Rotate)
	case c.RingPeers < 0:
		return fmt.Errorf("plan: RingPeers %d must not be negative", c.RingPeers)
	}
	return nil
}

// Pick is one peer the plan probes and why.
type Pick struct {
	Name   string     `json:"name"`
	Addr   netip.Addr `json:"addr"`
	Rack   netip.Addr `json:"rack,omitzero"`
	Reason Reason     `json:"reason"`
}

// Epoch returns the rotation epoch self is in at now and when it ends. The
// boundaries of different names are offset by a hash of the name.
func Epoch(self string, rotate time.Duration, now time.Time) (epoch int64, end time.Time) {
	if rotate <= 0 {
		return 0, time.Time{}
	}
	off := int64(hashOf(self) % uint64(rotate))
	t := now.UnixNano() + off
	epoch = t / int64(rotate)
	if t < 0 && t%int64(rotate) != 0 {
		epoch--
	}
	return epoch, time.Unix(0, (epoch+1)*int64(rotate)-off)
}

// Select returns the peers Self probes at now, sorted by address. Members
// may include Self (needed for its ring position; it is never picked);
// duplicate names keep their first entry.
func Select(c Config, members []Member, now time.Time) []Pick {
	ms := dedup(members)
	var peers []Member
	for _, m := range ms {
		if m.Name != c.Self {
			peers = append(peers, m)
		}
	}
	if c.Budget == 0 || len(peers) <= c.Budget {
		out := make([]Pick, len(peers))
		for i, m := range peers {
			out[i] = Pick{m.Name, m.Addr, m.Rack, ReasonMesh}
			if c.SelfRack.IsValid() && m.Rack == c.SelfRack {
				out[i].Reason = ReasonRack
			}
		}
		return sorted(out)
	}
	s := selection{budget: c.Budget, taken: make(map[string]bool)}
	if c.SelfRack.IsValid() {
		rack := slices.DeleteFunc(slices.Clone(peers), func(m Member) bool { return m.Rack != c.SelfRack })
		// A rack as large as the budget keeps a deterministic subset and
		// leaves one slot for the fabric beyond the rack.
		hs := hashOf(c.Self)
		for i, e := range keyed(rack, func(m Member) uint64 { return pairKey(hs, m.Name, 0) }) {
			if i < c.Budget-1 {
				s.take(e.m, ReasonRack)
			}
		}
	}
	for _, m := range ringSuccessors(c.Self, ms, c.RingPeers) {
		s.take(m, ReasonCoverage)
	}
	epoch, _ := Epoch(c.Self, c.Rotate, now)
	for _, m := range spread(c.Self, c.SelfRack, peers, epoch) {
		s.take(m, ReasonRotation)
	}
	return sorted(s.out)
}

type selection struct {
	budget int
	taken  map[string]bool
	out    []Pick
}

func (s *selection) take(m Member, r Reason) {
	if len(s.out) >= s.budget || s.taken[m.Name] {
		return
	}
	s.taken[m.Name] = true
	s.out = append(s.out, Pick{m.Name, m.Addr, m.Rack, r})
}

// ringSuccessors returns the k members after self on the ring ordered by
// hash(name).
func ringSuccessors(self string, ms []Member, k int) []Member {
	if k <= 0 || len(ms) < 2 {
		return nil
	}
	ring := keyed(ms, func(m Member) uint64 { return hashOf(m.Name) })
	i := slices.IndexFunc(ring, func(e entry) bool { return e.m.Name == self })
	if i < 0 {
		return nil
	}
	var out []Member
	for j := 1; j <= k && j < len(ring); j++ {
		out = append(out, ring[(i+j)%len(ring)].m)
	}
	return out
}

type entry struct {
	key uint64
	m   Member
}

// keyed returns ms sorted by key(m), each key computed once; ties go by
// name.
func keyed(ms []Member, key func(Member) uint64) []entry {
	es := make([]entry, len(ms))
	for i, m := range ms {
		es[i] = entry{key(m), m}
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.m.Name, b.m.Name)) })
	return es
}

// spread orders the peers outside self's rack round-robin over their racks:
// racks in a per-epoch hash order, and within each rack peers in a
// per-epoch hash order. A peer of unknown rack is a rack of its own.
func spread(self string, selfRack netip.Addr, peers []Member, epoch int64) []Member {
	hs := hashOf(self)
	rackKey := func(m Member) string {
		if m.Rack.IsValid() {
			return "rack:" + m.Rack.String()
		}
		return "peer:" + m.Name
	}
	others := slices.DeleteFunc(slices.Clone(peers), func(m Member) bool { return selfRack.IsValid() && m.Rack == selfRack })
	// Peers in hash order, then racks in the hash order of their keys: the
	// i-th round takes the i-th peer of every rack.
	rackHash := make(map[string]uint64)
	groups := make(map[string][]Member)
	for _, e := range keyed(others, func(m Member) uint64 { return pairKey(hs, m.Name, epoch) }) {
		k := rackKey(e.m)
		if _, ok := rackHash[k]; !ok {
			rackHash[k] = pairKey(hs, k, epoch)
		}
		groups[k] = append(groups[k], e.m)
	}
	keys := make([]string, 0, len(groups))
	longest := 0
	for k, g := range groups {
		keys = append(keys, k)
		longest = max(longest, len(g))
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(rackHash[a], rackHash[b]), cmp.Compare(a, b)) })
	out := make([]Member, 0, len(others))
	for i := 0; i < longest; i++ {
		for _, k := range keys {
			if g := groups[k]; i < len(g) {
				out = append(out, g[i])
			}
		}
	}
	return out
}

func dedup(members []Member) []Member {
	seen := make(map[string]bool, len(members))
	out := make([]Member, 0, len(members))
	for _, m := range members {
		if m.Name == "" || seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		m.Addr, m.Rack = m.Addr.Unmap(), m.Rack.Unmap()
		out = append(out, m)
	}
	return out
}

func sorted(ps []Pick) []Pick {
	slices.SortFunc(ps, func(a, b Pick) int { return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Name, b.Name)) })
	return ps
}

// hashOf is FNV-1a with a final avalanche (splitmix64), stable across
// processes and versions: the plan must not change on restart.
func hashOf(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return mix(h)
}

func pairKey(ha uint64, b string, epoch int64) uint64 {
	return mix(ha ^ mix(hashOf(b)+uint64(epoch)))
}

func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
