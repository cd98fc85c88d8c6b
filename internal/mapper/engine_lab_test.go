package mapper

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/probe"
	"github.com/dnms/dnms/internal/probe/probelab"
)

var _ Tracer = (*probe.Engine)(nil)

// startEngines runs a real probe engine (userspace reflector, user or
// kernel timestamps) in every host namespace of f.
func startEngines(t *testing.T, f *lab.Fabric, ports int) map[string]*probe.Engine {
	t.Helper()
	out := map[string]*probe.Engine{}
	for _, h := range f.Hosts {
		cfg := probe.DefaultConfig()
		cfg.LocalAddr = h.Addr
		cfg.SrcPortEnd = cfg.SrcPortStart + uint16(ports) - 1
		cfg.Registerer = prometheus.NewRegistry()
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.TraceTimeout = 500 * time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		e, done, err := probelab.Start(ctx, f, h, cfg)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("engine %s: %v", h.Name, err)
			}
		})
		out[h.Name] = e
	}
	return out
}

// A spine that drops its TTL-expired ICMP shows as a silent hop in routes
// traced by the engine, and those routes are still pingable end to end.
func TestLabEngineSilentRouterPingable(t *testing.T) {
	f := newLab(t)
	p := labPairs(t, f)[0]
	engines := startEngines(t, f, 11)
	var spineR lab.Router
	for _, r := range f.Routers {
		if r.Role == lab.RoleSpine {
			spineR = r
			break
		}
	}
	const table = "dnms_mapper_silent"
	rule := fmt.Sprintf("add table inet %[1]s\nadd chain inet %[1]s out { type filter hook output priority 0; }\nadd rule inet %[1]s out icmp type time-exceeded drop\n", table)
	file := filepath.Join(t.TempDir(), "silent.nft")
	if err := os.WriteFile(file, []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := f.Exec(spineR.NS, "nft", "-f", file); err != nil {
		t.Fatalf("nft in %s: %v %s", spineR.NS, err, out)
	}
	t.Cleanup(func() { f.Exec(spineR.NS, "nft", "delete", "table", "inet", table) })

	e := engines[p.src.Name]
	lm := startLabMapper(t, f, e, p.src, []netip.Addr{p.dst.Addr}, 11, time.Millisecond)
	waitSweeps(t, lm.m, 1, 60*time.Second)
	lm.stop()
	var want [][]string
	for _, r := range p.truth {
		r = slices.Clone(r)
		for i, a := range r {
			if a == spineR.Loopback.String() {
				r[i] = silentAddr
			}
		}
		want = append(want, r)
	}
	got := routesTo(lm.m, p.dst.Addr)
	if !equalRoutes(got, want) {
		t.Fatalf("routes with %s silent:\n%v\nwant:\n%v", spineR.Name, got, sortedRoutes(want))
	}
	var port uint16
	var route []string
	for _, r := range lm.m.RouteMap() {
		if r.Hops[2] == silentAddr {
			port, route = r.SrcPort, r.Hops
		}
	}
	if port == 0 {
		t.Fatalf("no port routed through the silent spine: %+v", lm.m.RouteMap())
	}
	// Ping that flow: the acks come back, so the route is usable.
	for range 5 {
		if _, err := e.Ping(p.dst.Addr, port); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	acked := 0
	deadline := time.After(20 * time.Second)
	for got := 0; got < 5; got++ {
		select {
		case r := <-e.Results():
			if r.Peer == p.dst.Addr && r.SrcPort == port && !r.Lost {
				acked++
			}
		case <-deadline:
			t.Fatalf("%d of 5 ping results in 20s", got)
		}
	}
	if acked < 4 {
		t.Errorf("%d of 5 pings on the silent route acked", acked)
	}
	t.Logf("port %d via silent %s: %d/5 pings acked; route %s", port, spineR.Name, acked, strings.Join(route, " "))
}
