package probe

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/dnms/dnms/internal/graph"
)

// FlowKey names one probing flow: pings from our source port SrcPort to Peer's
// ping port.
type FlowKey struct {
	Peer    netip.Addr
	SrcPort uint16
}

// Result is the outcome of one ping: a graph.Sample plus the raw timestamps
// it was computed from. T1..T4 are CLOCK_MONOTONIC ns; T1/T4 on our clock from
// Source, T2/T3 on the reflector's clock as it put them in the ack. They are 0
// for a lost probe.
type Result struct {
	Peer    netip.Addr
	SrcPort uint16
	graph.Sample
	T1, T2, T3, T4 int64
	// KernelReflected is set when the in-kernel (eBPF) reflector answered.
	KernelReflected bool
}

// sourceIdx indexes per-source stamp slots.
type sourceIdx uint8

const (
	idxEBPF sourceIdx = iota
	idxKernel
	idxUser
	numSources
)

var idxSource = [numSources]Source{SourceEBPF, SourceKernel, SourceUser}

func sourceIndex(s Source) sourceIdx {
	switch s {
	case SourceEBPF:
		return idxEBPF
	case SourceKernel:
		return idxKernel
	}
	return idxUser
}

type pending struct {
	seq      uint64
	sentWall time.Time
	deadline int64 // mono ns: ack timeout
	t1, t4   [numSources]int64
	t4Hook   int64 // ebpf: the TC hook's time when t4 is the stack's arrival stamp
	acked    bool
	ack      Packet
	// stampDeadline: once acked, how long we wait for missing stamps of the
	// preferred sources before falling back.
	stampDeadline int64
}

type lostProbe struct {
	seq      uint64
	sentWall time.Time
	lostAt   int64
}

// maxTimedOut bounds how many timed-out sequence numbers a flow remembers to
// tell a late ack (the first ack of a timed-out ping) from a duplicate.
// Any other ack of a sequence number that is not pending is a duplicate or
// a replay. Memory per flow stays small (a host has peers × ports flows).
const maxTimedOut = 64

// flowIdle is how long an idle flow's state is kept.
const flowIdle = 10 * time.Minute

type flowState struct {
	nextSeq uint64
	pend    map[uint64]*pending
	lost    []lostProbe // timed out, direction unresolved, ascending seq
	// The last in-time ack used as the interval boundary for loss direction.
	baseSeq, baseRx, baseAck uint64
	hiAckSeq                 uint64 // highest seq acked so far (reorder detection)
	failed                   uint64 // sends that failed since the boundary
	// Trace probes on this flow since the boundary: the peer's reflector
	// counts them with the pings. traceAcked were counted for sure;
	// traceUnknown may or may not have been (then the interval's
	// direction split is unknown).
	traceAcked, traceUnknown uint64
	intervals                []interval
	timedOut                 []uint64 // recent timed-out seqs without a late ack yet
	lastUsed                 int64    // mono ns of the last ping registered
}

// matcherStats are counters kept by the matcher (exported as metrics by the
// engine).
type matcherStats struct {
	late, duplicate, reordered, unknown uint64
	stampFallback                       uint64
	arrivalRejected                     uint64
}

// matcher matches acks to pings, joins stamps and attributes loss. It is
// pure logic: the caller passes the clock (mono ns) in, which lets tests run
// it with a fake clock.
type matcher struct {
	mu            sync.Mutex
	timeout       int64
	stampWait     int64
	resolveWindow int64
	order         []sourceIdx // sources to try, best first
	flows         map[FlowKey]*flowState
	active        map[FlowKey]*flowState // flows with pending, lost or interval state
	nextSweep     int64
	emit          func(Result) // called with mu held; must not block
	st            matcherStats
}

func newMatcher(timeout, stampWait, resolveWindow time.Duration, want Source, emit func(Result)) *matcher {
	m := &matcher{
		timeout:       int64(timeout),
		stampWait:     int64(stampWait),
		resolveWindow: int64(resolveWindow),
		flows:         make(map[FlowKey]*flowState),
		active:        make(map[FlowKey]*flowState),
		emit:          emit,
	}
	for i := sourceIndex(want); i < numSources; i++ {
		m.order = append(m.order, i)
	}
	return m
}

func (m *matcher) flow(k FlowKey) *flowState {
	f := m.flows[k]
	if f == nil {
		f = &flowState{nextSeq: 1, pend: make(map[uint64]*pending)}
		m.flows[k] = f
	}
	return f
}

// register records a ping about to be sent and returns its sequence number.
// t1user is the user clock read that goes into the packet.
func (m *matcher) register(k FlowKey, now int64, wall time.Time) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.flow(k)
	seq := f.nextSeq
	f.nextSeq++
	p := &pending{seq: seq, sentWall: wall, deadline: now + m.timeout}
	p.t1[idxUser] = now
	f.pend[seq] = p
	f.lastUsed = now
	m.active[k] = f
	return seq
}

// unregister forgets a ping that could not be sent (sendto failed): it is
// reported lost in the forward direction, since it never left.
func (m *matcher) sendFailed(k FlowKey, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.flows[k]
	if f == nil {
		return
	}
	p := f.pend[seq]
	if p == nil {
		return
	}
	delete(f.pend, seq)
	m.emit(Result{Peer: k.Peer, SrcPort: k.SrcPort, Sample: graph.Sample{
		Seq: seq, Sent: p.sentWall, Lost: true, Dir: graph.LossForward, Source: graph.TimeSource(idxSource[m.order[0]]),
	}})
	// The reflector never saw it: the next interval must not count it as
	// sent (or it would look like a forward loss).
	f.failed++
}

// stamp records a timestamp of the given source for a pending ping.
// tx: our ping left (T1); otherwise the ack arrived (T4), and hook, when not
// 0, is the later time to use if t turns out impossible. It reports whether
// the ping was found.
func (m *matcher) stamp(k FlowKey, seq uint64, tx bool, src sourceIdx, t, hook int64, now int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.flows[k]
	if f == nil {
		return false
	}
	p := f.pend[seq]
	if p == nil {
		return false
	}
	if tx {
		p.t1[src] = t
	} else {
		p.t4[src] = t
		if src == idxEBPF {
			p.t4Hook = hook
		}
	}
	if p.acked && m.complete(p) {
		m.finish(k, f, p, now)
	}
	return true
}

// complete reports whether the best wanted source has both stamps.
func (m *matcher) complete(p *pending) bool {
	s := m.order[0]
	return p.t1[s] != 0 && p.t4[s] != 0
}

// ack handles a decoded ack for flow k. t4 holds the arrival stamps known
// now (user always, kernel if available; 0 = missing). It returns a reject
// reason for duplicates/replays and acks of unknown flows.
func (m *matcher) ack(k FlowKey, a *Packet, t4 [numSources]int64, now int64) RejectReason {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.flows[k]
	if f == nil || a.Seq == 0 || a.Seq >= f.nextSeq {
		m.st.unknown++
		return RejectUnknownFlow
	}
	p := f.pend[a.Seq]
	if p == nil || p.acked {
		if p == nil {
			if i := slices.Index(f.timedOut, a.Seq); i >= 0 {
				f.timedOut = slices.Delete(f.timedOut, i, i+1)
				m.st.late++
				return RejectNone
			}
		}
		m.st.duplicate++
		return RejectReplay
	}
	if a.Seq < f.hiAckSeq {
		m.st.reordered++
	} else {
		f.hiAckSeq = a.Seq
	}
	p.acked = true
	p.ack = *a
	for i, t := range t4 {
		if t != 0 && p.t4[i] == 0 {
			p.t4[i] = t
		}
	}
	p.stampDeadline = now + m.stampWait
	m.resolve(k, f, a)
	if m.complete(p) {
		m.finish(k, f, p, now)
	}
	return RejectNone
}

// resolve attributes losses between the previous boundary ack and a (an
// in-time ack in sequence order) to a direction from the reflector's
// counters: in the interval (base, a.Seq], forward lost = sent − received by
// the reflector; the other losses are reverse. Pings of the interval still
// pending now take their direction from the interval record when they time
// out.
func (m *matcher) resolve(k FlowKey, f *flowState, a *Packet) {
	if a.Seq <= f.baseSeq {
		f.lateAck(a) // reordered: not a boundary
		return
	}
	iv := interval{lo: f.baseSeq, hi: a.Seq, hiRx: a.RxCount,
		consistent: a.RxCount >= f.baseRx && a.AckCount >= f.baseAck && f.traceUnknown == 0}
	if iv.consistent {
		sent := a.Seq - f.baseSeq - f.failed + f.traceAcked
		if got := a.RxCount - f.baseRx; sent > got {
			iv.fwdLeft = sent - got
		}
	}
	f.failed, f.traceAcked, f.traceUnknown = 0, 0, 0
	// Losses at or below the old boundary can no longer be resolved
	// (they were reported, direction unknown, when they timed out).
	i := sort.Search(len(f.lost), func(i int) bool { return f.lost[i].seq > f.baseSeq })
	j := sort.Search(len(f.lost), func(j int) bool { return f.lost[j].seq >= a.Seq })
	inFlight := f.inFlight(iv.lo, iv.hi)
	for _, l := range f.lost[i:j] {
		if dir := iv.take(inFlight); dir != graph.LossUnknown {
			m.emitResolved(k, l, dir)
		}
	}
	f.lost = append(f.lost[:0], f.lost[j:]...)
	f.baseSeq, f.baseRx, f.baseAck = a.Seq, a.RxCount, a.AckCount
	// Keep the record only while pings of the interval are outstanding.
	if inFlight > 0 {
		f.intervals = append(f.intervals, iv)
		if len(f.intervals) > maxIntervals {
			f.intervals = f.intervals[1:]
		}
	}
}

// interval is one resolved span between boundary acks.
type interval struct {
	lo, hi     uint64 // exclusive bounds (boundary seqs)
	hiRx       uint64 // the reflector's rxCount in hi's ack
	fwdLeft    uint64 // forward losses not yet given to a lost ping
	consistent bool   // counters moved forward (no reflector restart)
}

const maxIntervals = 64

// take gives a timed-out ping of the interval its direction. inFlight
// pings of the interval are still pending: the reflector's count at the
// boundary may be short of them only because they were still on their way
// (a ping sent just before the boundary's can reach the reflector after
// it), so they have the first claim on the forward losses. Without that,
// a reverse loss took a forward loss that a later-acked ping had left.
func (iv *interval) take(inFlight int) graph.LossDir {
	switch {
	case !iv.consistent:
		return graph.LossUnknown
	case iv.fwdLeft > uint64(inFlight):
		iv.fwdLeft--
		return graph.LossForward
	}
	return graph.LossReverse
}

// lateAck settles an interval with the ack of one of its pings that came
// after the interval's boundary: a reflector count above the boundary's
// says the ping reached the reflector only after the boundary's, so the
// boundary counted it among the forward losses, and it was not one.
func (f *flowState) lateAck(a *Packet) {
	for i := range f.intervals {
		iv := &f.intervals[i]
		if iv.lo < a.Seq && a.Seq < iv.hi && a.RxCount > iv.hiRx && iv.fwdLeft > 0 {
			iv.fwdLeft--
			return
		}
	}
}

// inFlight counts the pings of (lo, hi) still waiting for their ack.
func (f *flowState) inFlight(lo, hi uint64) int {
	n := 0
	for s, p := range f.pend {
		if lo < s && s < hi && !p.acked {
			n++
		}
	}
	return n
}

// timedOut handles a ping whose ack did not come in time.
func (m *matcher) timedOut(k FlowKey, f *flowState, p *pending, now int64) {
	delete(f.pend, p.seq)
	if len(f.timedOut) >= maxTimedOut {
		f.timedOut = slices.Delete(f.timedOut, 0, 1)
	}
	f.timedOut = append(f.timedOut, p.seq)
	l := lostProbe{seq: p.seq, sentWall: p.sentWall, lostAt: now}
	for i := range f.intervals {
		iv := &f.intervals[i]
		if iv.lo < p.seq && p.seq < iv.hi {
			m.emitLost(k, l, iv.take(f.inFlight(iv.lo, iv.hi))) // p left pend above
			return
		}
	}
	// Reported now, direction unknown; a later ack's counters may still
	// tell it (emitResolved). Waiting for them delayed every loss on a
	// dead reverse path by the whole resolve window.
	m.emitLost(k, l, graph.LossUnknown)
	f.lost = append(f.lost, l)
}

func (m *matcher) emitLost(k FlowKey, l lostProbe, dir graph.LossDir) { m.emitLoss(k, l, dir, false) }

// emitResolved gives the direction of a loss reported earlier as unknown.
func (m *matcher) emitResolved(k FlowKey, l lostProbe, dir graph.LossDir) {
	m.emitLoss(k, l, dir, true)
}

func (m *matcher) emitLoss(k FlowKey, l lostProbe, dir graph.LossDir, resolves bool) {
	m.emit(Result{Peer: k.Peer, SrcPort: k.SrcPort, Sample: graph.Sample{
		Seq: l.seq, Sent: l.sentWall, Lost: true, Dir: dir, Resolves: resolves, Source: graph.TimeSource(idxSource[m.order[0]]),
	}})
}

// finish emits the sample of an acked ping from the best source that has
// both stamps.
func (m *matcher) finish(k FlowKey, f *flowState, p *pending, now int64) {
	delete(f.pend, p.seq)
	src := idxUser
	for n, s := range m.order {
		if p.t1[s] != 0 && p.t4[s] != 0 {
			src = s
			if n > 0 {
				m.st.stampFallback++
			}
			break
		}
	}
	t1, t4 := p.t1[src], p.t4[src]
	dwell := p.ack.T3 - p.ack.T2
	if dwell < 0 {
		dwell = 0
	}
	if src == idxEBPF {
		var rejected bool
		if t4, rejected = possibleArrival(t1, dwell, t4, p.t4Hook); rejected {
			m.st.arrivalRejected++
		}
	}
	rtt := t4 - t1 - dwell
	if rtt < 0 {
		rtt = 0
	}
	m.emit(Result{
		Peer: k.Peer, SrcPort: k.SrcPort,
		Sample: graph.Sample{Seq: p.seq, Sent: p.sentWall, RTT: time.Duration(rtt), Source: graph.TimeSource(idxSource[src])},
		T1:     t1, T2: p.ack.T2, T3: p.ack.T3, T4: t4,
		KernelReflected: p.ack.Flags&FlagKernel != 0,
	})
}

// possibleArrival returns the eBPF arrival stamp t4 of an answer to a probe
// that left at t1, unless t4 puts the answer back before the probe could
// have returned (t4 < t1 + dwell, the far end's dwell): then it is not this
// packet's arrival (seen about once in 5000 acks on a loaded VM), and the TC
// hook's own stamp, later than the arrival but never impossible, replaces
// it. rejected says so; hook is 0 when t4 already is the hook's time.
func possibleArrival(t1, dwell, t4, hook int64) (t int64, rejected bool) {
	if t4 < t1+dwell && hook > t4 {
		return hook, true
	}
	return t4, false
}

// expire times out pings without ack, finishes acked pings whose stamps did
// not all arrive, and gives up on losses no later ack resolved.
func (m *matcher) expire(now int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Only flows with something outstanding are visited on every tick; a
	// host with thousands of flows pings each once a second, so few are
	// active at any moment.
	for k, f := range m.active {
		for _, p := range f.pend {
			switch {
			case p.acked && now >= p.stampDeadline:
				m.finish(k, f, p, now)
			case !p.acked && now >= p.deadline:
				m.timedOut(k, f, p, now)
			}
		}
		f.pruneIntervals()
		if len(f.lost) > 1 {
			slices.SortFunc(f.lost, func(a, b lostProbe) int { return cmp.Compare(a.seq, b.seq) })
		}
		// Losses no ack resolved within the window stay unknown (they
		// were reported when they timed out).
		f.lost = slices.DeleteFunc(f.lost, func(l lostProbe) bool { return now-l.lostAt >= m.resolveWindow })
		if len(f.pend) == 0 && len(f.lost) == 0 && len(f.intervals) == 0 {
			delete(m.active, k)
		}
	}
	// Forget idle flows (a peer that left): nothing outstanding and no ping
	// for flowIdle. A later ping starts the flow afresh, which the
	// reflector tolerates (counters are checked for going backwards).
	if now >= m.nextSweep {
		m.nextSweep = now + int64(time.Minute)
		for k, f := range m.flows {
			if m.active[k] == nil && now-f.lastUsed > int64(flowIdle) {
				delete(m.flows, k)
			}
		}
	}
}

// flush emits everything still outstanding (on Close): pending pings as
// lost with unknown direction (unresolved losses were reported already).
func (m *matcher) flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, f := range m.flows {
		for _, p := range f.pend {
			if p.acked {
				m.finish(k, f, p, 0)
				continue
			}
			m.emitLost(k, lostProbe{seq: p.seq, sentWall: p.sentWall}, graph.LossUnknown)
		}
		delete(m.flows, k)
		delete(m.active, k)
	}
}

func (m *matcher) stats() matcherStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

// pruneIntervals drops interval records with no outstanding ping inside.
func (f *flowState) pruneIntervals() {
	n := 0
	for _, iv := range f.intervals {
		keep := false
		for s := iv.lo + 1; s < iv.hi; s++ {
			if p := f.pend[s]; p != nil && !p.acked {
				keep = true
				break
			}
		}
		if keep {
			f.intervals[n] = iv
			n++
		}
	}
	f.intervals = f.intervals[:n]
}

// traceDone records the trace probes a finished trace sent on flow k that the
// peer's reflector counted (acked) or may have counted (unknown).
func (m *matcher) traceDone(k FlowKey, acked, unknown uint64, now int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.flow(k)
	f.lastUsed = now
	f.traceAcked += acked
	f.traceUnknown += unknown
}
