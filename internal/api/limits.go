package api

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// Reasons an event stream is refused (dnms_api_event_streams_rejected_total).
const (
	rejectTotal     = "total"      // every stream slot open to this client is taken
	rejectPerClient = "per_client" // this client address holds its share
)

// streamLimiter admits SSE streams: at most max in all, at most perClient
// per client address, and the last reserved slots only for authenticated
// aggregators (a verified cluster client certificate), so that one greedy
// client, or many, cannot lock the aggregator out of an agent.
type streamLimiter struct {
	max, perClient, reserved int

	mu       sync.Mutex
	total    int
	byClient map[string]int
}

func newStreamLimiter(max, perClient, reserved int) *streamLimiter {
	return &streamLimiter{max: max, perClient: perClient, reserved: min(reserved, max), byClient: map[string]int{}}
}

// acquire takes a slot for client; it returns a reject reason or "" and a
// release func.
func (l *streamLimiter) acquire(client string, aggregator bool) (string, func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case aggregator:
		if l.total >= l.max {
			return rejectTotal, nil
		}
	case l.total >= l.max-l.reserved:
		return rejectTotal, nil
	case l.byClient[client] >= l.perClient:
		return rejectPerClient, nil
	}
	l.total++
	l.byClient[client]++
	var once sync.Once
	return "", func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.byClient[client]--; l.byClient[client] <= 0 {
				delete(l.byClient, client)
			}
		})
	}
}

// clientAddr is the request's remote IP (without port).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// isAggregator reports whether the request carries a client certificate the
// TLS layer verified against the cluster CA: only an aggregator has one.
func isAggregator(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0
}

// queue admits at most cap(q.slots) requests at once; the next ones wait up
// to wait for a slot, then get 503 (scrapes bursting past the limit queue
// briefly instead of failing at once).
type queue struct {
	slots chan struct{}
	wait  time.Duration
}

func newQueue(n int, wait time.Duration) *queue {
	return &queue{slots: make(chan struct{}, n), wait: wait}
}

// wrap runs h under the queue; rejected counts requests that waited out.
func (q *queue) wrap(h http.Handler, rejected func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case q.slots <- struct{}{}:
		default:
			ctx, cancel := context.WithTimeout(r.Context(), q.wait)
			defer cancel()
			select {
			case q.slots <- struct{}{}:
			case <-ctx.Done():
				rejected()
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusServiceUnavailable, "too many concurrent requests; retry")
				return
			}
		}
		defer func() { <-q.slots }()
		h.ServeHTTP(w, r)
	})
}
