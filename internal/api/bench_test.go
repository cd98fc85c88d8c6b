package api

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
)

// bigGraph is one agent's graph in a fabric of `peers` peers behind
// peers/10 leaves and 4 spines, probed on `ports` source ports, 100 samples
// per flow with 1% loss: the size of the documents a large agent serves.
func bigGraph(b testing.TB, peers, ports int) *graph.Graph {
	b.Helper()
	cfg := graph.DefaultConfig()
	cfg.Now = func() time.Time { return fixedNow }
	g := graph.New(cfg)
	for p := range peers {
		peer := netip.AddrFrom4([4]byte{198, 19, byte(p >> 8), byte(p)})
		leaf := netip.AddrFrom4([4]byte{198, 18, 100, byte(p / 10)})
		for port := range ports {
			spine := netip.AddrFrom4([4]byte{198, 18, 200, byte(port % 4)})
			key := graph.RouteKey{Src: h1, Dst: peer, SrcPort: uint16(33436 + port)}
			g.SetRoute(key, hops(h1, leaf1, spine, leaf, peer))
			for j := range 100 {
				s := graph.Sample{Seq: uint64(j), Sent: fixedNow, Source: "ebpf", RTT: time.Duration(100+j) * time.Microsecond}
				if j == 0 {
					s.Lost, s.RTT = true, 0
				}
				g.AddSample(key, s)
			}
		}
	}
	return g
}

// BenchmarkEndpoints: time and size of the main documents and of a scrape
// for 100 peers x 11 ports (1100 flows). Run:
//
//	go test ./internal/api -run '^$' -bench Endpoints -benchtime 20x
func BenchmarkEndpoints(b *testing.B) {
	g := bigGraph(b, 100, 11)
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Registerer, cfg.Gatherer = reg, reg
	s, err := New(cfg, Deps{Graph: g})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	for _, path := range []string{"/v1/graph", "/v1/graph/routes", "/v1/graph/edges/health", "/metrics"} {
		b.Run(path, func(b *testing.B) {
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d", path, rec.Code)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/doc")
		})
	}
}

// BenchmarkSSEDelivery: events per second through a real loopback stream,
// producer to parsed frame. Run:
//
//	go test ./internal/api -run '^$' -bench SSEDelivery
func BenchmarkSSEDelivery(b *testing.B) {
	for _, coalesce := range []time.Duration{time.Nanosecond} {
		b.Run(fmt.Sprintf("route-update/coalesce=%v", coalesce), func(b *testing.B) {
			gcfg := graph.DefaultConfig()
			gcfg.CoalesceInterval = coalesce // every sample an event
			g := graph.New(gcfg)
			key := graph.RouteKey{Src: h1, Dst: h2, SrcPort: 33436}
			g.SetRoute(key, hops(h1, leaf1, h2))
			cfg := DefaultConfig()
			cfg.StreamBuffer = 1 << 16
			reg := prometheus.NewRegistry()
			cfg.Registerer, cfg.Gatherer = reg, reg
			s, err := New(cfg, Deps{Graph: g})
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			defer s.Close()
			resp, err := http.Get(srv.URL + "/v1/events/graph")
			if err != nil {
				b.Fatal(err)
			}
			defer resp.Body.Close()
			c := &sseClient{resp: resp, frames: make(chan sseEvent, 1<<16), errc: make(chan error, 1)}
			go c.read()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				g.AddSample(key, graph.Sample{Seq: uint64(i), Sent: time.Now(), RTT: time.Millisecond, Source: "user"})
			}
			got := 0
			for got < b.N {
				ev, ok := <-c.frames
				if !ok {
					b.Fatalf("stream ended after %d of %d events", got, b.N)
				}
				if ev.Event == sseResync {
					b.Fatalf("resync after %d events", got)
				}
				if ev.Event == string(graph.EventRouteUpdate) {
					got++
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 0))
		})
	}
}
