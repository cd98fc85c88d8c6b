package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Connections that end without a request the server could route (garbage,
// a stalled header, a failed TLS handshake, a port scan) are counted by
// reason in dnms_api_connections_rejected_total:
//   - tls_handshake: the TLS layer refused it (http.Server logs it);
//   - no_request: it closed without ever carrying a well-formed request
//     (net/http answered 400 or 431, or timed it out).

// Reasons of dnms_api_connections_rejected_total.
const (
	connNoRequest    = "no_request"
	connTLSHandshake = "tls_handshake"
)

// connTracker follows each connection: ConnContext gives it a flag the
// middleware sets when a request reaches it (net/http's StateActive comes
// with the first byte, garbage included), and ConnState counts the ones
// that close with the flag still down.
type connTracker struct {
	mu      sync.Mutex
	served  map[net.Conn]*atomic.Bool
	onEmpty func()
}

type servedKey struct{}

func newConnTracker(onEmpty func()) *connTracker {
	return &connTracker{served: map[net.Conn]*atomic.Bool{}, onEmpty: onEmpty}
}

// connContext is http.Server.ConnContext.
func (t *connTracker) connContext(ctx context.Context, c net.Conn) context.Context {
	f := new(atomic.Bool)
	t.mu.Lock()
	t.served[c] = f
	t.mu.Unlock()
	return context.WithValue(ctx, servedKey{}, f)
}

// state is http.Server.ConnState.
func (t *connTracker) state(c net.Conn, s http.ConnState) {
	if s != http.StateClosed && s != http.StateHijacked {
		return
	}
	t.mu.Lock()
	f, ok := t.served[c]
	delete(t.served, c)
	t.mu.Unlock()
	if tc, isTLS := c.(*tls.Conn); isTLS && !tc.ConnectionState().HandshakeComplete {
		return // counted as tls_handshake by the server's error log
	}
	if ok && !f.Load() && s == http.StateClosed {
		t.onEmpty()
	}
}

// markServed records that r reached the handlers.
func markServed(r *http.Request) {
	if f, ok := r.Context().Value(servedKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}

// serverLog is http.Server.ErrorLog: it counts TLS handshake failures and
// passes every line to the logger at debug.
type serverLog struct {
	out   *log.Logger
	onTLS func()
}

func newServerLog(h slog.Handler, onTLS func()) *log.Logger {
	return log.New(serverLog{out: slog.NewLogLogger(h, slog.LevelDebug), onTLS: onTLS}, "", 0)
}

func (w serverLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("TLS handshake error")) {
		w.onTLS()
	}
	w.out.Print(string(p))
	return len(p), nil
}
