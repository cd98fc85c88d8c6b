package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/sseid"
)

// SSE event names the API adds to graph.EventType.
const (
	sseSnapshot = "snapshot"
	sseResync   = "resync"
)

// resyncBody is the data of a resync event.
type resyncBody struct {
	Reason string `json:"reason"`
	// LastEventID is the SSE id ("<instance>-<seq>") of the last event
	// this stream delivered; reconnecting with it resumes if the graph still
	// holds what follows.
	LastEventID string `json:"lastEventId"`
}

// lastEventID reads the resume point: the Last-Event-ID header (what
// EventSource sends on reconnect) or the lastEventId query parameter (for
// clients that cannot set headers). Absent, unparsable or from another
// instance means 0: start with a snapshot.
func (s *Server) lastEventID(r *http.Request) uint64 {
	v := strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" {
		v = strings.TrimSpace(r.URL.Query().Get("lastEventId"))
	}
	inst, seq, ok := sseid.Parse(v)
	if !ok || inst != s.instance {
		return 0
	}
	return seq
}

// eventsHandler streams a graph's changes as server-sent events: a snapshot
// (unless the client resumes within the graph's replay buffer), then every
// change, with heartbeats. A client that falls behind is told to resync and
// the stream ends; the graph never waits for it.
func (s *Server) eventsHandler(g Graph, view string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reason, release := s.streams.acquire(clientAddr(r), isAggregator(r))
		if reason != "" {
			s.metrics.streamsRejected.WithLabelValues(reason).Inc()
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable,
				fmt.Sprintf("too many event streams (%s limit: %d in all, %d reserved for aggregators, %d per client)",
					reason, s.cfg.MaxStreams, s.cfg.ReservedStreams, s.cfg.MaxStreamsPerClient))
			return
		}
		defer release()
		select {
		case <-s.closing:
			writeError(w, http.StatusServiceUnavailable, "server shutting down")
			return
		default:
		}
		s.metrics.streams.WithLabelValues(view).Inc()
		defer s.metrics.streams.WithLabelValues(view).Dec()

		after := s.lastEventID(r)
		h := w.Header()
		var (
			sub    *graph.Subscription
			bt     *time.Timer
			batchC <-chan time.Time // nil: not batched
		)
		form := s.batchForm(g, r)
		switch form {
		case BatchFormDeltas:
			sub = g.(deltaGraph).SubscribeDeltas(after, s.cfg.StreamBuffer)
			h.Set(BatchFormHeader, strconv.Itoa(form))
		case BatchFormMetrics:
			sub = g.(batchGraph).SubscribeBatched(after, s.cfg.StreamBuffer)
		default:
			sub = g.Subscribe(after, s.cfg.StreamBuffer)
		}
		if form != 0 {
			h.Set(BatchHeader, s.cfg.BatchInterval.String())
			bt = time.NewTimer(time.Until(NextBatch(time.Now(), s.cfg.BatchInterval, s.cfg.BatchPhase)))
			defer bt.Stop()
			batchC = bt.C
		}
		defer sub.Close()

		rc := http.NewResponseController(w)
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // no proxy buffering
		w.WriteHeader(http.StatusOK)

		bw := bufio.NewWriterSize(w, 32<<10)
		st := &stream{s: s, rc: rc, bw: bw, view: view, last: after}
		if err := st.send(func() error {
			fmt.Fprintf(bw, "retry: %d\n\n", s.cfg.Retry.Milliseconds())
			return nil
		}); err != nil {
			return
		}
		if sub.Snapshot != nil {
			snap := normSnapshot(*sub.Snapshot)
			if err := st.eventID(sseSnapshot, snap.EventID, true, snap); err != nil {
				s.log.Debug("sse write", "view", view, "err", err)
				return
			}
		}

		hb := time.NewTicker(s.cfg.Heartbeat)
		defer hb.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-s.closing:
				_ = st.send(func() error { _, err := bw.WriteString(": server shutting down\n\n"); return err })
				return
			case <-hb.C:
				if err := st.send(func() error { _, err := bw.WriteString(": hb\n\n"); return err }); err != nil {
					return
				}
			case <-batchC:
				// The batch is queued on sub.C behind what was already
				// sent there, and written when it comes out.
				sub.Batch()
				bt.Reset(time.Until(NextBatch(time.Now(), s.cfg.BatchInterval, s.cfg.BatchPhase)))
			case ev, ok := <-sub.C:
				if !ok {
					reason := "subscription closed"
					if sub.Overflowed() {
						reason = "client fell behind the event stream"
						s.metrics.resyncs.WithLabelValues(view).Inc()
					}
					_ = st.event(sseResync, 0, resyncBody{Reason: reason, LastEventID: sseid.Format(s.instance, st.last)})
					return
				}
				if err := st.event(string(ev.Type), ev.ID, ev); err != nil {
					s.log.Debug("sse write", "view", view, "err", err)
					return
				}
			}
		}
	})
}

// stream writes SSE frames to one client.
type stream struct {
	s    *Server
	rc   *http.ResponseController
	bw   *bufio.Writer
	view string
	last uint64 // id of the last event delivered
}

// event writes one "event:/id:/data:" frame and flushes it. id 0 writes no
// id line (the client keeps its previous one).
func (st *stream) event(name string, id uint64, v any) error {
	return st.eventID(name, id, id != 0, v)
}

// eventID is event with the id line forced on (a snapshot of an empty graph,
// seq 0, still names its instance).
func (st *stream) eventID(name string, id uint64, withID bool, v any) error {
	if st.s.beforeEvent != nil {
		st.s.beforeEvent()
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", name, err)
	}
	err = st.send(func() error {
		st.bw.WriteString("event: ")
		st.bw.WriteString(name)
		st.bw.WriteByte('\n')
		if withID {
			st.bw.WriteString("id: ")
			st.bw.WriteString(sseid.Format(st.s.instance, id))
			st.bw.WriteByte('\n')
		}
		// json.Marshal output holds no raw newlines, so one data line.
		st.bw.WriteString("data: ")
		st.bw.Write(data)
		_, err := st.bw.WriteString("\n\n")
		return err
	})
	if err == nil {
		if id > st.last {
			st.last = id
		}
		st.s.metrics.events.WithLabelValues(st.view).Inc()
	}
	return err
}

// send runs write under a fresh write deadline and flushes.
func (st *stream) send(write func() error) error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.s.cfg.StreamWriteTimeout)); err != nil &&
		!errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if err := write(); err != nil {
		return err
	}
	if err := st.bw.Flush(); err != nil {
		return err
	}
	return st.rc.Flush()
}

// BatchHeader is the response header of an event stream that sends
// route-batch events (the client asked with ?batch= and the server
// batches): its value is the interval, e.g. "5s". A client that asked and
// does not see it talks to a server that streams every route-update.
// BatchFormHeader says in which form.
const BatchHeader = "X-Dnms-Batch-Interval"

// batchGraph is a Graph that can batch metrics updates (*graph.Graph).
type batchGraph interface {
	SubscribeBatched(after uint64, buf int) *graph.Subscription
}

// deltaGraph is a batchGraph that can send batches in delta form.
type deltaGraph interface {
	batchGraph
	SubscribeDeltas(after uint64, buf int) *graph.Subscription
}

// Batch forms a client may list in ?batch= (every form it takes, e.g.
// "?batch=1&batch=2"): the server answers with the highest it knows.
const (
	// BatchFormMetrics: a route-batch event's "batch" holds each changed
	// route's window metrics.
	BatchFormMetrics = 1
	// BatchFormDeltas: its "deltas" hold what changed in each local
	// route's flow state since the stream's previous batch
	// (graph.DeltaBatch), announced by BatchFormHeader.
	BatchFormDeltas = 2
)

// BatchFormHeader is the response header of a batched stream in a form
// other than BatchFormMetrics: its value is the form's number ("2"). A
// batched stream without it is in BatchFormMetrics (a member that
// predates delta batches reads only the first ?batch= value, which the
// aggregator makes "1").
const BatchFormHeader = "X-Dnms-Batch-Form"

// batchForm is the batch form this server streams g in for r: the
// highest r asks for that g and the configuration allow, 0 for none.
func (s *Server) batchForm(g Graph, r *http.Request) int {
	if s.cfg.BatchInterval <= 0 {
		return 0
	}
	asked := r.URL.Query()["batch"]
	if _, ok := g.(deltaGraph); ok && slices.Contains(asked, strconv.Itoa(BatchFormDeltas)) {
		return BatchFormDeltas
	}
	if _, ok := g.(batchGraph); ok && slices.Contains(asked, strconv.Itoa(BatchFormMetrics)) {
		return BatchFormMetrics
	}
	return 0
}

// NextBatch is the first time after now at which a member whose batches
// sit at phase within interval sends one: phase past a multiple of
// interval since the Unix epoch. Streams of one member (to several
// aggregators) batch together; members with different phases do not.
func NextBatch(now time.Time, interval, phase time.Duration) time.Time {
	iv := int64(interval)
	off := now.UnixNano() - int64(phase%interval)
	k := off / iv
	if off < 0 && off%iv != 0 {
		k-- // floor
	}
	return time.Unix(0, (k+1)*iv+int64(phase%interval))
}

// BatchPhase spreads members' batches over the interval: a hash (FNV-1a)
// of the member's name, modulo interval. Deterministic, so a restart keeps
// it, and independent of graph.Flush's one-second tick.
func BatchPhase(name string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return time.Duration(h.Sum64() % uint64(interval))
}
