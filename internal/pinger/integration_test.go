package pinger

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/probe"
)

// startEngine runs a real probe engine on addr (loopback) with the given ports.
func startEngine(t *testing.T, ctx context.Context, addr string, ping uint16) *probe.Engine {
	t.Helper()
	c := probe.DefaultConfig()
	c.LocalAddr = netip.MustParseAddr(addr)
	c.PingPort, c.SrcPortStart, c.SrcPortEnd = ping, ping+1, ping+4
	c.Timestamps = "user"
	e, err := probe.New(c)
	if err != nil {
		t.Skipf("cannot bind %s:%d on loopback: %v", addr, ping, err)
	}
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { e.Close(); <-done })
	return e
}

// The pinger with a real engine pair on loopback and a real graph: every
// route collects samples at its interval.
func TestWithEngineAndGraph(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ping := uint16(41000 + os.Getpid()%2000*10)
	a := startEngine(t, ctx, "127.0.0.2", ping)
	startEngine(t, ctx, "127.0.0.3", ping)
	g := graph.New(graph.DefaultConfig())
	src, dst := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	var routeKeys []graph.RouteKey
	for p := ping + 1; p <= ping+4; p++ {
		k := graph.RouteKey{Src: src, Dst: dst, SrcPort: p}
		g.SetRoute(k, []graph.Hop{{Addr: src}, {Addr: dst}})
		routeKeys = append(routeKeys, k)
	}
	cfg := DefaultConfig()
	cfg.PeerInterval, cfg.RouteInterval, cfg.Local = 10*time.Millisecond, 50*time.Millisecond, src
	cfg.Registerer = prometheus.NewRegistry()
	p, err := New(cfg, a, g, g)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(20 * time.Second)
	var last graph.Snapshot
	for time.Now().Before(deadline) {
		last = g.Snapshot()
		ok := len(last.Routes) > 0
		samples := 0
		for _, r := range last.Routes {
			samples += r.Metrics.Samples
			if r.Metrics.Lost > 0 {
				t.Fatalf("loss on loopback: %+v", r.Metrics)
			}
		}
		if ok && samples >= 40 {
			for _, r := range last.Routes {
				if r.Metrics.Source != "user" || r.Metrics.RTTP50 <= 0 {
					t.Fatalf("route metrics %+v", r.Metrics)
				}
			}
			return
		}
		time.Sleep(20 * time.Millisecond) // polling the graph with a deadline
	}
	t.Fatalf("samples never arrived: %+v", last.Routes)
}
