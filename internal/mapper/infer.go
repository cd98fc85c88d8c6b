package mapper

import (
	"net/netip"

	"github.com/dnms/dnms/internal/graph"
)

// How a hop of a trace was learned: the values of the source label of
// dnms_mapper_hops_total.
const (
	HopProbed = "probe" // a probe at that TTL was answered (or timed out: a silent hop)
	HopMDA    = "mda"   // inferred from a confirmed (TTL, predecessor) group
	HopFIB    = "fib"   // TTL 1 reused from this sweep's probe of another port: the FIB has one next hop
)

// groupKey names an MDA node-control group of one peer: the flows whose hop
// at TTL-1 is pred, and what they showed at TTL. For TTL 1, pred is the
// local address. pred is never a silent hop: a silent hop is a placeholder
// unique to its route, so flows behind "*" share no vertex and their group
// is never confirmed (nothing is recorded for it).
type groupKey struct {
	ttl  int
	pred netip.Addr
}

// group is the MDA node control (Augustin et al., "Multipath tracing with
// Paris traceroute") for one vertex, made stateful across sweeps: for each
// source port (flow) whose probe at ttl went through pred, the successor
// its last probe showed. The same port seen again is the same flow, so it
// replaces its own observation instead of adding one: the group counts
// distinct flows, never observations.
type group struct {
	succ map[uint16]netip.Addr // zero Addr: the probe went unanswered
	// verified is the last sweep in which some port probed ttl behind pred
	// (-1: never); next is where the fallback verification rotation stands.
	verified int
	next     uint16
}

func newGroup() *group { return &group{succ: make(map[uint16]netip.Addr), verified: -1} }

// confirmed returns the group's single successor when at least n1 distinct
// flows showed it and no flow showed anything else: n1 is FlowsNeeded(1,
// confidence), the flows that rule out a second next hop (6 at 95%). A
// flow whose probe went unanswered counts as disagreeing, so does a silent
// successor: inference never fills in a "*".
func (g *group) confirmed(n1 int) (netip.Addr, bool) {
	if g == nil || len(g.succ) < n1 {
		return netip.Addr{}, false
	}
	var s netip.Addr
	for _, a := range g.succ {
		if !a.IsValid() || (s.IsValid() && a != s) {
			return netip.Addr{}, false
		}
		s = a
	}
	return s, true
}

// inferFor returns the successor to infer for port at this group: the
// confirmed successor, but only where it is this port's own last probed
// answer here, or the peer itself. MDA's 95% is about the vertex, not about
// a flow: with two next hops, 6 agreeing flows still happen 3% of the time,
// and over a cluster's many vertices some would be wrong, putting a port on
// the wrong link (seen in the demo as a false faulty verdict on the broken
// link's sibling). So a flow's hop is measured at least once before it is
// ever inferred (then inference means "unchanged", checked by rotation);
// only the last hop into the peer, which has no other way to go in a Clos
// fabric, is inferred for flows never probed there.
func (g *group) inferFor(port uint16, peer netip.Addr, n1 int) (netip.Addr, bool) {
	succ, ok := g.confirmed(n1)
	if !ok || (succ != peer && g.succ[port] != succ) {
		return netip.Addr{}, false
	}
	return succ, true
}

// branching reports whether flows of the group showed two or more distinct
// successors (a silent answer counts as one): every port in it is probed.
func (g *group) branching() bool {
	if g == nil {
		return false
	}
	first, set := netip.Addr{}, false
	for _, a := range g.succ {
		if !set {
			first, set = a, true
		} else if a != first {
			return true
		}
	}
	return false
}

// slot is one TTL of a trace in progress.
type slot struct {
	resolved bool
	source   string    // HopProbed, HopMDA or HopFIB once resolved
	hop      graph.Hop // zero Addr: silent
	dest     bool      // the peer (answered, or inferred as the successor)
	unreach  bool      // a router said destination unreachable
}

// fibState is, per peer and sweep, whether the local FIB has a single next
// hop towards the peer and, once one port probed TTL 1, who answered there.
type fibState struct {
	sweep  int // sweep the state is for; -1 for none yet
	single bool
	hop    graph.Hop // answered TTL 1; zero Addr until one did
}

// tracePlan is what one trace of one flow knows while it runs: the hops
// resolved so far (probed or inferred), and the port's previous route as a
// prediction of the rest.
type tracePlan struct {
	peer  netip.Addr
	port  uint16
	sweep int
	slots []slot // index = TTL; slots[0] unused
	// predicted[t] is the hop the port's last route had at TTL t (index 0
	// unused); nil when the port has no route yet.
	predicted []graph.Hop
	// limit is the TTL at which the peer is expected: the port's last
	// route's length, else the shortest known route to the peer, 0 when
	// nothing is known. No probe is sent above it until everything up to it
	// is resolved and the hop at it turned out to be a router.
	limit int
	// verify: this is the port's turn to be fully probed, so no MDA
	// inference in this trace.
	verify bool
	fib    fibState
	probes int
}

func (tp *tracePlan) slot(ttl int) *slot {
	for len(tp.slots) <= ttl {
		tp.slots = append(tp.slots, slot{})
	}
	return &tp.slots[ttl]
}

// predictedHop is the port's previous hop at ttl, if any.
func (tp *tracePlan) predictedHop(ttl int) (graph.Hop, bool) {
	if ttl < len(tp.predicted) {
		return tp.predicted[ttl], true
	}
	return graph.Hop{}, false
}

// apply stores the answers of one round of probes.
func (tp *tracePlan) apply(res ProbeResult) {
	tp.probes += res.ProbesSent
	for _, a := range res.Answers {
		if a.TTL < 1 {
			continue
		}
		s := tp.slot(a.TTL)
		*s = slot{resolved: true, source: HopProbed, hop: a.Hop, dest: a.Dest, unreach: a.Unreachable}
		if a.Hop.Addr.IsValid() {
			s.hop.Addr = a.Hop.Addr.Unmap()
			if s.hop.Addr == tp.peer {
				s.dest = true
			}
		}
	}
}

// outcome is a finished trace as the mapper stores it.
type outcome struct {
	hops    []graph.Hop // TTL order; ends with the peer when reached
	reached bool
	// end is the last TTL the result covers; the slots up to it are the
	// trace's resolved hops.
	end int
}

// outcome walks the resolved prefix of the slots: up to the peer (reached),
// a destination unreachable, or maxSilent silent hops in a row (dropped, as
// a full trace drops them).
func (tp *tracePlan) outcome(maxSilent int) outcome {
	var o outcome
	silent := 0
	for ttl := 1; ttl < len(tp.slots); ttl++ {
		s := tp.slots[ttl]
		if !s.resolved {
			break
		}
		o.hops = append(o.hops, s.hop)
		o.end = ttl
		if s.dest {
			o.reached = true
			return o
		}
		if s.unreach {
			return o
		}
		if !s.hop.Addr.IsValid() {
			if silent++; silent >= maxSilent {
				break
			}
		} else {
			silent = 0
		}
	}
	// A trace that did not reach the peer ends at its last answer.
	for len(o.hops) > 0 && !o.hops[len(o.hops)-1].Addr.IsValid() {
		o.hops = o.hops[:len(o.hops)-1]
	}
	return o
}

// startTrace snapshots what the mapper knows for one trace of (peer, port):
// the port's last route as a prediction, the distance the peer is expected
// at, whether this is the port's turn to be fully probed, and the FIB's word
// on TTL 1 (asked once per peer and sweep). It returns nil for a peer that
// is gone.
func (m *Mapper) startTrace(peer netip.Addr, port uint16) *tracePlan {
	m.mu.Lock()
	ps, ok := m.peers[peer]
	if !ok {
		m.mu.Unlock()
		return nil
	}
	sweep := m.sweeps
	askFIB := m.cfg.FIB != nil && ps.fib.sweep != sweep
	m.mu.Unlock()
	single := false
	if askFIB {
		// Outside the lock: a netlink round trip.
		n, err := m.cfg.FIB.NextHops(peer)
		single = err == nil && n == 1
		if err != nil {
			m.log.Debug("FIB lookup failed: TTL 1 is probed like any other", "peer", peer, "err", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps, ok = m.peers[peer]; !ok {
		return nil
	}
	if askFIB && ps.fib.sweep != sweep {
		ps.fib = fibState{sweep: sweep, single: single}
	}
	tp := &tracePlan{peer: peer, port: port, sweep: sweep, fib: ps.fib}
	st := ps.ports[port]
	if st != nil && st.route != nil {
		// route = local, hops…, peer: index t is the hop at TTL t.
		tp.predicted = st.route
		tp.limit = len(st.route) - 1
	} else {
		for _, o := range ps.ports {
			if d := len(o.route) - 1; o.route != nil && (tp.limit == 0 || d < tp.limit) {
				tp.limit = d
			}
		}
	}
	tp.limit = min(tp.limit, m.cfg.MaxTTL)
	tp.verify = m.fullVerifyLocked(port, st, sweep)
	return tp
}

// fullVerifyLocked reports whether port is fully probed (no MDA inference)
// in sweep: ports take turns, port i in the sweeps s with i ≡ s (mod
// VerifyEvery), a different subset each sweep. A change hidden behind an
// inferred hop thus shows within VerifyEvery sweeps. A port's first trace
// is no turn: it has nothing to re-verify.
func (m *Mapper) fullVerifyLocked(port uint16, st *portState, sweep int) bool {
	v := m.cfg.VerifyEvery
	return st != nil && st.traced && int(port-m.cfg.SrcPortStart)%v == sweep%v
}

// passes reports whether a port's last route went through pred at TTL-1.
func passes(st *portState, ttl int, pred netip.Addr) bool {
	return st != nil && len(st.route) > ttl && st.route[ttl-1].Addr == pred
}

// groupNeedsProbeLocked reports whether tp's port must probe ttl behind
// pred although group g is confirmed: at least one port of every confirmed
// group probes it in every sweep. That is a port fully probed this sweep if
// one goes through the group; otherwise the group's own rotation picks one:
// the first port at or after g.next, wrapping round.
func (m *Mapper) groupNeedsProbeLocked(ps *peerState, tp *tracePlan, g *group, ttl int, pred netip.Addr) bool {
	if g.verified == tp.sweep {
		return false
	}
	// The ports still to be traced in this sweep, as far as their last
	// routes tell.
	var later []uint16
	for q := int(tp.port) + 1; q <= int(m.cfg.SrcPortEnd); q++ {
		st := ps.ports[uint16(q)]
		if !passes(st, ttl, pred) {
			continue
		}
		if m.fullVerifyLocked(uint16(q), st, tp.sweep) {
			return false
		}
		later = append(later, uint16(q))
	}
	if tp.port >= g.next {
		return true
	}
	for _, q := range later {
		if q >= g.next {
			return false
		}
	}
	return true
}

// resolveLocked fills slot ttl without a probe when that is sound, given
// the hop pred at ttl-1 is known for this flow: TTL 1 from this sweep's
// probe of another port when the FIB has a single next hop, else the
// confirmed successor of group (ttl, pred) unless this port or this group is
// due for verification.
func (m *Mapper) resolveLocked(ps *peerState, tp *tracePlan, ttl int, pred netip.Addr) {
	s := tp.slot(ttl)
	if ttl == 1 && tp.fib.single && tp.fib.hop.Addr.IsValid() {
		*s = slot{resolved: true, source: HopFIB, hop: graph.Hop{Addr: tp.fib.hop.Addr}}
		return
	}
	if !pred.IsValid() || tp.verify {
		return
	}
	g := ps.groups[groupKey{ttl, pred}]
	succ, ok := g.inferFor(tp.port, tp.peer, m.n1)
	if !ok || m.groupNeedsProbeLocked(ps, tp, g, ttl, pred) {
		return
	}
	*s = slot{resolved: true, source: HopMDA, hop: graph.Hop{Addr: succ}, dest: succ == tp.peer}
}

// anyConfirmedLocked reports whether some group at ttl is confirmed.
func (m *Mapper) anyConfirmedLocked(ps *peerState, ttl int) bool {
	for k, g := range ps.groups {
		if k.ttl == ttl {
			if _, ok := g.confirmed(m.n1); ok {
				return true
			}
		}
	}
	return false
}

// planLocked resolves every hop of tp it can without probing and returns
// the TTLs to probe in the next round: none when the trace is finished.
//
// It walks the TTLs up from 1. A hop whose predecessor is resolved is
// resolved at once if resolveLocked can. Otherwise it is probed, and the
// walk goes on speculatively: behind a hop probed in this round, the
// port's previous hop at that TTL stands in for the answer, and a hop a
// confirmed group would give behind it is not probed; after the round, the
// inference is made again behind the real answer (and the hop probed in a
// later round if the answer differs). Without a prediction the walk stops
// where the answer decides whether the next hop is probed. No TTL above the
// expected distance is probed in the same round as one below it, so no
// probe goes past a TTL already known to be the peer's; beyond it, or when
// no distance is known, the walk goes one TTL per round.
func (m *Mapper) planLocked(ps *peerState, tp *tracePlan) []int {
	var round []int
	// prev is the hop at h-1: actual (resolved), speculative (predicted or
	// inferred behind a hop probed this round) or unknown.
	prev, known, actual := m.cfg.LocalAddr, true, true
	allResolved := true // every TTL below h is resolved
	silent := 0         // resolved silent hops in a row just below h
	for h := 1; h <= m.cfg.MaxTTL; h++ {
		if actual && !tp.slot(h).resolved {
			m.resolveLocked(ps, tp, h, prev)
		}
		if s := *tp.slot(h); s.resolved {
			prev, known, actual = s.hop.Addr, true, true
			if !allResolved {
				if s.dest || s.unreach {
					break
				}
				continue
			}
			if s.dest || s.unreach {
				return nil
			}
			if s.hop.Addr.IsValid() {
				silent = 0
				continue
			}
			silent++
			if silent >= m.cfg.MaxSilent || h == tp.limit {
				// The silent run ends the trace; so does silence where
				// the peer was expected: a peer gone dark costs no probes
				// beyond its distance.
				return nil
			}
			continue
		}
		if known && !actual && prev.IsValid() && !tp.verify {
			g := ps.groups[groupKey{h, prev}]
			if succ, ok := g.inferFor(tp.port, tp.peer, m.n1); ok && !m.groupNeedsProbeLocked(ps, tp, g, h, prev) {
				prev, allResolved = succ, false
				if succ == tp.peer {
					break
				}
				continue
			}
		}
		if !known && m.anyConfirmedLocked(ps, h) {
			break // the answer below decides whether h is probed
		}
		if tp.limit == 0 || h > tp.limit {
			if !allResolved {
				break
			}
			// One TTL at a time; after silence, the rest of the silent
			// budget at once (if it stays silent the trace ends there).
			n := 1
			if silent > 0 {
				n = m.cfg.MaxSilent - silent
			}
			for t := h; t < h+n && t <= m.cfg.MaxTTL; t++ {
				round = append(round, t)
			}
			return round
		}
		round = append(round, h)
		allResolved = false
		prev, known, actual = netip.Addr{}, false, false
		if p, ok := tp.predictedHop(h); ok {
			prev, known = p.Addr, true
		}
		if h == tp.limit || (known && prev == tp.peer) {
			break
		}
	}
	return round
}

// observeLocked feeds the groups with what this trace's probes showed, and
// keeps each port a member only of the groups its route goes through.
func (m *Mapper) observeLocked(ps *peerState, st *portState, tp *tracePlan, o outcome) {
	for ttl := 1; ttl <= o.end && ttl < len(tp.slots); ttl++ {
		s := tp.slots[ttl]
		pred := m.cfg.LocalAddr
		if ttl > 1 {
			p := tp.slots[ttl-1]
			if !p.resolved {
				continue
			}
			pred = p.hop.Addr
		}
		if old, ok := st.obs[ttl]; ok && old != pred {
			ps.dropObservation(groupKey{ttl, old}, tp.port)
			delete(st.obs, ttl)
		}
		if !pred.IsValid() || !s.resolved || s.source != HopProbed || s.unreach {
			continue
		}
		k := groupKey{ttl, pred}
		g := ps.groups[k]
		if g == nil {
			g = newGroup()
			ps.groups[k] = g
		}
		g.succ[tp.port] = s.hop.Addr
		st.obs[ttl] = pred
		g.verified = tp.sweep
		g.next = tp.port + 1
		if tp.port == m.cfg.SrcPortEnd {
			g.next = m.cfg.SrcPortStart
		}
	}
	if o.reached {
		for ttl, pred := range st.obs {
			if ttl > o.end {
				ps.dropObservation(groupKey{ttl, pred}, tp.port)
				delete(st.obs, ttl)
			}
		}
	}
}

func (ps *peerState) dropObservation(k groupKey, port uint16) {
	if g := ps.groups[k]; g != nil {
		delete(g.succ, port)
		if len(g.succ) == 0 {
			delete(ps.groups, k)
		}
	}
}

// resolvedCount is how many TTLs are resolved.
func (tp *tracePlan) resolvedCount() int {
	n := 0
	for _, s := range tp.slots {
		if s.resolved {
			n++
		}
	}
	return n
}
