package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dnms/dnms/internal/ui"
)

// Paths that never need the token.
var openPaths = map[string]bool{"/healthz": true}

const (
	corsMethods = "GET, HEAD, OPTIONS"
	corsHeaders = "Authorization, Content-Type, Last-Event-ID, Cache-Control"
	corsMaxAge  = "600"
)

// middleware sets CORS headers on every response, answers preflights,
// enforces the bearer token, and bounds plain responses' write time.
func (s *Server) middleware(next http.Handler) http.Handler {
	var want [sha256.Size]byte
	if s.cfg.Token != "" {
		want = sha256.Sum256([]byte(s.cfg.Token))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markServed(r)
		h := w.Header()
		if s.cfg.AllowOrigin != "" {
			h.Set("Access-Control-Allow-Origin", s.cfg.AllowOrigin)
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Expose-Headers", "WWW-Authenticate")
			h.Set("Access-Control-Max-Age", corsMaxAge)
			if s.cfg.AllowOrigin != "*" {
				h.Add("Vary", "Origin")
			}
		}
		// A preflight carries no credentials by design: answer it openly.
		if r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		if s.cfg.Token != "" && !openPaths[r.URL.Path] && !ui.IsPath(r.URL.Path) {
			if !s.authorized(r, want) {
				s.metrics.authFailures.Inc()
				h.Set("WWW-Authenticate", `Bearer realm="dnms"`)
				writeError(w, http.StatusUnauthorized, "missing or invalid bearer token (send Authorization: Bearer <token>)")
				return
			}
		}
		// Plain responses get a write deadline; the SSE handler replaces
		// it with one per event.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		next.ServeHTTP(w, r)
	})
}

// authorized compares the bearer token in constant time. Both sides are
// hashed first so the comparison does not leak the token's length either.
func (s *Server) authorized(r *http.Request, want [sha256.Size]byte) bool {
	auth := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(auth[len(prefix):])))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// errorBody is every error response: {"error": "..."}.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSONCode(w, nil, code, errorBody{Error: msg})
}

// writeJSON writes v with status 200. ?pretty indents it.
func writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	writeJSONCode(w, r, http.StatusOK, v)
}

func writeJSONCode(w http.ResponseWriter, r *http.Request, code int, v any) {
	var (
		b   []byte
		err error
	)
	if r != nil && r.URL.Query().Has("pretty") {
		b, err = json.MarshalIndent(v, "", "  ")
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "encode response: " + err.Error()})
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	if r != nil && r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}
