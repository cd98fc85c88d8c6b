package aggregator

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MemberStatus is one member stream as Status (and /v1/aggregator/members)
// reports it.
type MemberStatus struct {
	Name  string `json:"name"`
	URL   string `json:"url"`
	State string `json:"state"` // connecting, connected, backoff, rejected, stopped
	// Reason says why the last attempt failed ("" while connected): a
	// member refusing us (e.g. "503: too many event streams"), an
	// unreachable one, or why it was rejected (tls, identity).
	Reason      string `json:"reason,omitempty"`
	LastEventID uint64 `json:"lastEventId"`
	// LastEvent is when the last event from this member was applied.
	LastEvent *time.Time `json:"lastEvent,omitempty"`
	Routes    int        `json:"routes"`
	// Stale: the member's routes are kept in the graph but the stream is
	// down, so they stop changing until it comes back.
	Stale bool `json:"stale"`
	// Token: the aggregator sends this member its token (it proved it
	// belongs, or it is this node).
	Token      bool   `json:"token"`
	Reconnects uint64 `json:"reconnects"`
	// Batch is the member's -aggregateInterval when its stream sends
	// route-batch events ("" when it streams every route-update: a member
	// with -aggregateInterval 0, or one that predates batching).
	Batch string `json:"batch,omitempty"`
	// BatchForm is the form of its route-batch events: 1, each changed
	// route's metrics; 2, deltas of its flow state (absent when unbatched).
	BatchForm int `json:"batchForm,omitempty"`
}

// Status lists the members and their streams, sorted by name.
func (a *Aggregator) Status() []MemberStatus {
	a.mu.Lock()
	ms := a.memberList()
	a.mu.Unlock()
	out := make([]MemberStatus, 0, len(ms))
	for _, m := range ms {
		st, _ := m.state.Load().(string)
		reason, _ := m.reason.Load().(string)
		s := MemberStatus{
			Name: m.name, URL: m.url, State: st, Reason: reason,
			LastEventID: m.lastSeen.Load(), Routes: int(m.nroutes.Load()),
			Token: m.a.sendsToken(m.name), Reconnects: m.reconnects.Load(),
		}
		s.Batch, _ = m.batch.Load().(string)
		s.BatchForm = int(m.batchForm.Load())
		if ns := m.lastEvent.Load(); ns != 0 {
			t := time.Unix(0, ns).UTC()
			s.LastEvent = &t
		}
		s.Stale = s.Routes > 0 && (st != stateConnected || m.stale.Load())
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y MemberStatus) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// Connected reports whether the aggregator's stream from member name is up.
func (a *Aggregator) Connected(name string) bool {
	a.mu.Lock()
	m := a.members[name]
	a.mu.Unlock()
	if m == nil {
		return false
	}
	st, _ := m.state.Load().(string)
	return st == stateConnected
}

// markStaleLoop runs markStale every quarter of StaleAfter until ctx ends.
func (a *Aggregator) markStaleLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.StaleAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.markStale(now)
		}
	}
}

// markStale marks in the graph the members from which nothing has come for
// StaleAfter (its stream stalled, or is down and reconnects fail), and marks fresh again those that
// stream: health leaves a stale member's samples out, since what it sent
// before its stream stalled is not what its probes see now.
func (a *Aggregator) markStale(now time.Time) {
	a.mu.Lock()
	ms := a.memberList()
	a.mu.Unlock()
	for _, m := range ms {
		st, _ := m.state.Load().(string)
		last := m.lastLine.Load()
		stale := last == 0 || now.Sub(time.Unix(0, last)) > a.cfg.StaleAfter
		if stale == m.stale.Load() {
			continue
		}
		m.stale.Store(stale)
		a.g.SetOriginStale(m.name, stale)
		if m.nroutes.Load() == 0 {
			continue // nothing imported yet: nothing to say
		}
		if stale {
			a.log.Info("member stale: its samples are left out of health until it streams again", "member", m.name, "state", st)
		} else {
			a.log.Info("member fresh again", "member", m.name)
		}
	}
}

// staleRoutes counts routes kept from members whose stream is down, for
// dnms_aggregator_stale_routes.
func (a *Aggregator) staleRoutes() float64 {
	n := 0
	for _, s := range a.Status() {
		if s.Stale {
			n += s.Routes
		}
	}
	return float64(n)
}

// seen records an applied event.
func (m *member) seen(id uint64) {
	m.lastSeen.Store(id)
	m.lastEvent.Store(time.Now().UnixNano())
}

// failed records why an attempt ended and moves to backoff, or to rejected
// when the member failed to prove it belongs.
func (m *member) failed(r streamResult, log *slog.Logger) {
	reason := ""
	switch {
	case r.err == nil:
	case r.status != 0:
		reason = strconv.Itoa(r.status) + ": " + http.StatusText(r.status)
	default:
		reason = r.err.Error()
	}
	if rej := rejection(r.err); rej != "" {
		m.a.met.rejections.WithLabelValues(rej).Inc()
		if old, _ := m.state.Load().(string); old != stateRejected {
			log.Warn("member rejected: it did not prove it belongs to the cluster; no token sent, nothing imported", "reason", rej, "err", r.err)
		}
		m.reason.Store(rej + ": " + r.err.Error())
		m.setState(stateRejected)
		return
	}
	m.reason.Store(reason)
	m.setState(stateBackoff)
}

// retryAfter reads a refusal's Retry-After in seconds (bounded to a minute).
func retryAfter(resp *http.Response) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After")))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 60)) * time.Second
}
