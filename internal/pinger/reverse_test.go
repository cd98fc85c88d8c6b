package pinger

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
)

// peerAPI serves a routes-to document the way internal/api does: an ETag,
// 304 when it matches, 401 without the token.
type peerAPI struct {
	mu     sync.Mutex
	doc    map[string]any
	fail   bool
	hits   int
	paths  []string
	etagIn []string
}

func (s *peerAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits++
	s.paths = append(s.paths, r.URL.Path)
	s.etagIn = append(s.etagIn, r.Header.Get("If-None-Match"))
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, "no token", http.StatusUnauthorized)
		return
	}
	if s.fail {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	b, _ := json.Marshal(s.doc)
	etag := fmt.Sprintf(`"%x"`, len(b)*31+int(b[len(b)-3]))
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(b)
}

func (s *peerAPI) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func routesDoc(peer string, ids map[uint16]string) map[string]any {
	var ports []map[string]any
	for p, id := range ids {
		ports = append(ports, map[string]any{"srcPort": p, "routeId": id})
	}
	return map[string]any{"peer": peer, "traced": true, "ports": ports}
}

// TestReverse: only peers the pinger asks about are requested; an answer
// is reused (304) until it changes; a peer that stops answering is
// forgotten after MaxAge; a port the answer lacks brings the next request
// forward.
func TestReverse(t *testing.T) {
	api := &peerAPI{doc: routesDoc(local.String(), map[uint16]string{33436: "b1", 33437: "b1"})}
	srv := httptest.NewServer(api)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	r, err := NewReverse(ReverseConfig{Local: local, Refresh: 10 * time.Second, MaxAge: 30 * time.Second, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	r.SetPeer(peerA, PeerAPI{URL: srv.URL, Token: "tok"})
	ctx := context.Background()
	t0 := time.Now().Add(5 * time.Second) // past the first request's random phase
	key := func(port uint16) graph.RouteKey { return graph.RouteKey{Src: local, Dst: peerA, SrcPort: port} }
	hits := func() int { api.mu.Lock(); defer api.mu.Unlock(); return api.hits }
	result := func(res string) float64 { return testutil.ToFloat64(r.reqs.WithLabelValues(res)) }

	r.poll(ctx, t0)
	if hits() != 0 {
		t.Fatalf("a peer nobody pings was asked %d times", hits())
	}
	if _, ok := r.reverseAt(key(33436), t0); ok {
		t.Fatal("reverse route known before any answer")
	}
	r.poll(ctx, t0)
	if hits() != 1 || api.paths[0] != RoutesToPath+local.String() {
		t.Fatalf("after the pinger asked: %d requests %v, want 1 to %s", hits(), api.paths, RoutesToPath+local.String())
	}
	if id, ok := r.reverseAt(key(33437), t0); !ok || id != "b1" {
		t.Fatalf("port 33437: %q %v, want b1", id, ok)
	}

	// Not due again before Refresh; then a 304 keeps the answer.
	r.poll(ctx, t0.Add(5*time.Second))
	r.poll(ctx, t0.Add(10*time.Second))
	if hits() != 2 || api.etagIn[1] == "" || result("unchanged") != 1 {
		t.Fatalf("refresh: %d requests, If-None-Match %q, %v unchanged; want 2, an ETag, 1", hits(), api.etagIn, result("unchanged"))
	}

	// A port the answer lacks: asked again after Refresh/5, not Refresh.
	if _, ok := r.reverseAt(key(33438), t0.Add(10*time.Second)); ok {
		t.Fatal("port 33438 known, the peer never listed it")
	}
	api.set(func() {
		api.doc = routesDoc(local.String(), map[uint16]string{33436: "b1", 33437: "b2", 33438: "b2"})
	})
	r.poll(ctx, t0.Add(12*time.Second))
	if hits() != 3 || result("changed") != 2 {
		t.Fatalf("missed port: %d requests, %v changed; want 3, 2", hits(), result("changed"))
	}
	if id, _ := r.reverseAt(key(33437), t0.Add(12*time.Second)); id != "b2" {
		t.Errorf("after the change port 33437 comes back on %q, want b2", id)
	}

	// The peer stops answering: the answer stands until MaxAge, then not.
	api.set(func() { api.fail = true })
	for s := 22; s <= 52; s += 10 {
		r.reverseAt(key(33436), t0.Add(time.Duration(s)*time.Second))
		r.poll(ctx, t0.Add(time.Duration(s)*time.Second))
	}
	if result("error") < 3 {
		t.Errorf("%v failed requests counted, want ≥ 3", result("error"))
	}
	if _, ok := r.reverseAt(key(33436), t0.Add(41*time.Second)); !ok {
		t.Error("answer dropped before MaxAge")
	}
	if _, ok := r.reverseAt(key(33436), t0.Add(43*time.Second)); ok {
		t.Error("answer still used past MaxAge without a refresh")
	}

	r.RemovePeer(peerA)
	if _, ok := r.reverseAt(key(33436), t0); ok {
		t.Error("a removed peer still has reverse routes")
	}
}

// decodeRoutesTo refuses an answer about another host and anything not
// JSON, and drops empty or oversized ids.
func TestDecodeRoutesTo(t *testing.T) {
	big := make([]byte, 300)
	for i := range big {
		big[i] = 'x'
	}
	for _, tc := range []struct {
		body string
		want int
		err  bool
	}{
		{`{"peer":"198.18.0.1","ports":[{"srcPort":1,"routeId":"a"},{"srcPort":2,"routeId":""},{"srcPort":3,"routeId":"` + string(big) + `"}]}`, 1, false},
		{`{"peer":"::ffff:198.18.0.1","ports":[]}`, 0, false},
		{`{"peer":"198.18.0.9","ports":[{"srcPort":1,"routeId":"a"}]}`, 0, true},
		{`{"peer":"198.18.0.1","ports":[{"srcPort":70000}]}`, 0, true},
		{`not json`, 0, true},
	} {
		got, err := decodeRoutesTo(strings.NewReader(tc.body), local)
		if (err != nil) != tc.err || len(got) != tc.want {
			t.Errorf("%.60s: %d routes, err %v; want %d, error %v", tc.body, len(got), err, tc.want, tc.err)
		}
	}
}

// FuzzDecodeRoutesTo: a peer's answer never panics the decoder, and what
// it keeps has only non-empty, bounded route ids.
func FuzzDecodeRoutesTo(f *testing.F) {
	f.Add(`{"peer":"198.18.0.1","traced":true,"ports":[{"srcPort":33436,"routeId":"a"}]}`)
	f.Add(`{"peer":"198.18.0.1","ports":null}`)
	f.Add(`{"peer":1}`)
	f.Fuzz(func(t *testing.T, body string) {
		routes, err := decodeRoutesTo(strings.NewReader(body), local)
		if err != nil && routes != nil {
			t.Fatalf("error %v with routes %v", err, routes)
		}
		for p, id := range routes {
			if id == "" || len(id) > 256 {
				t.Fatalf("port %d kept route id of %d bytes", p, len(id))
			}
		}
	})
}
