package graph

import (
	"slices"
	"sync/atomic"
)

// eventLog is the bounded replay ring of recent events.
type eventLog struct {
	buf   []Event
	start int // index of the oldest event in buf
	n     int
	last  uint64 // id of the newest event ever emitted (0: none)
}

func newEventLog(size int) eventLog {
	return eventLog{buf: make([]Event, size)}
}

func (l *eventLog) push(ev Event) {
	if l.n < len(l.buf) {
		l.buf[(l.start+l.n)%len(l.buf)] = ev
		l.n++
		return
	}
	l.buf[l.start] = ev
	l.start = (l.start + 1) % len(l.buf)
}

// since returns the events with ID > after and whether the ring still holds
// all of them.
func (l *eventLog) since(after uint64) ([]Event, bool) {
	if after > l.last {
		return nil, false // an id from another graph instance
	}
	if after == l.last {
		return nil, true
	}
	if l.n == 0 {
		return nil, false
	}
	oldest := l.buf[l.start].ID
	if after+1 < oldest {
		return nil, false
	}
	skip := int(after + 1 - oldest)
	out := make([]Event, 0, l.n-skip)
	for i := skip; i < l.n; i++ {
		out = append(out, l.buf[(l.start+i)%len(l.buf)])
	}
	return out, true
}

// emitLocked stamps ev with the next id and the time, keeps it for replay and
// hands it to every subscriber without blocking: a subscriber whose channel
// is full is closed and marked overflowed.
func (g *Graph) emitLocked(ev Event) {
	g.events.last++
	ev.ID = g.events.last
	ev.Time = g.cfg.Now()
	folded := ev.coalesced
	ev.coalesced, ev.batchable = nil, folded != nil
	g.events.push(ev)
	for s := range g.subs {
		if s.batched && folded != nil {
			s.dirty[folded] = struct{}{} // goes out with the next batch
			continue
		}
		s.sendLocked(ev)
	}
}

// sendLocked hands ev to s without blocking; a full channel closes s as
// overflowed. It reports whether ev was queued.
func (s *Subscription) sendLocked(ev Event) bool {
	select {
	case s.ch <- ev:
		return true
	default:
		s.overflowed.Store(true)
		delete(s.g.subs, s)
		close(s.ch)
		return false
	}
}

// LastEventID is the id of the newest event (0 when none).
func (g *Graph) LastEventID() uint64 {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.events.last
}

// Subscription is one reader of the event stream.
type Subscription struct {
	// Snapshot is non-nil when the events after the requested id are no
	// longer (or never were) in the replay buffer: the reader starts from it,
	// and C carries the events after Snapshot.EventID.
	Snapshot *Snapshot
	// C carries events in id order. It is closed by Close, or by the graph
	// when the reader fell behind (Overflowed reports true then).
	C <-chan Event

	ch         chan Event
	g          *Graph
	overflowed atomic.Bool

	// Batched subscriptions (SubscribeBatched), under g.mu: routes whose
	// coalesced metrics updates are owed, and whether every route is owed.
	batched bool
	dirty   map[*routeEntry]struct{}
	all     bool
	// sent is, for a delta subscription (SubscribeDeltas), what its
	// batches last carried of each local route; nil for other ones.
	sent map[*routeEntry]*deltaSent
}

// Subscribe starts a stream of events with ID > after. When after is 0, or
// older than the replay buffer, or unknown, the subscription carries a
// Snapshot to start from instead. buf is the channel capacity (<= 0: the
// configured default); replayed events come on top of it. Writers never block
// on a subscriber: one that falls buf events behind is closed and marked
// overflowed.
func (g *Graph) Subscribe(after uint64, buf int) *Subscription {
	return g.subscribe(after, buf, false, false)
}

func (g *Graph) subscribe(after uint64, buf int, batched, deltas bool) *Subscription {
	if buf <= 0 {
		buf = g.cfg.SubscriberBuffer
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := &Subscription{g: g, batched: batched}
	var replay []Event
	ok := false
	if after > 0 {
		replay, ok = g.events.since(after)
	}
	if !ok {
		snap := cloneSnapshot(g.viewLocked())
		s.Snapshot = &snap
		replay = nil
	}
	if deltas {
		s.sent = make(map[*routeEntry]*deltaSent)
	}
	if batched {
		s.dirty = make(map[*routeEntry]struct{})
		// A resumed reader may have missed coalesced updates from before
		// its resume point that were owed to its next batch: owe it all.
		s.all = s.Snapshot == nil
		replay = slices.DeleteFunc(replay, func(ev Event) bool { return ev.batchable })
	}
	s.ch = make(chan Event, buf+len(replay))
	for _, ev := range replay {
		s.ch <- ev
	}
	s.C = s.ch
	g.subs[s] = struct{}{}
	return s
}

// Close ends the subscription and closes C. Safe to call more than once.
func (s *Subscription) Close() {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.subs[s]; ok {
		delete(g.subs, s)
		close(s.ch)
	}
}

// Overflowed reports whether the graph closed C because the reader fell
// behind: the reader must resync (Subscribe again, getting a snapshot).
func (s *Subscription) Overflowed() bool { return s.overflowed.Load() }

func clonePathChange(pc *PathChange) *PathChange {
	c := *pc
	c.OldHops = slices.Clone(pc.OldHops)
	c.NewHops = slices.Clone(pc.NewHops)
	return &c
}
