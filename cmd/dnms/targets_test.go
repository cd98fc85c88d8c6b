package main

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
)

func TestTargetFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	if c.TargetsFile != "" || c.PathHistory != 10 || c.StateDir != "" {
		t.Fatalf("defaults: targets %q, pathHistory %d, stateDir %q", c.TargetsFile, c.PathHistory, c.StateDir)
	}
	c, err = parseFlags([]string{"-targets", "/etc/dnms/targets.yml", "-pathHistory", "3", "-stateDir", "/var/lib/dnms"}, io.Discard, fixedIP)
	if err != nil || c.TargetsFile != "/etc/dnms/targets.yml" || c.PathHistory != 3 || c.StateDir != "/var/lib/dnms" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, v := range []string{"0", "10001"} {
		if _, err := parseFlags([]string{"-pathHistory", v}, io.Discard, fixedIP); err == nil || !strings.Contains(err.Error(), "-pathHistory must be") {
			t.Fatalf("-pathHistory %s: %v", v, err)
		}
	}
}

// fakeSink records what the mapper stored.
type fakeSink struct{ routes int }

func (s *fakeSink) SetRoute(graph.RouteKey, []graph.Hop) (string, *graph.PathChange) {
	s.routes++
	return "r", nil
}
func (s *fakeSink) RemoveHost(netip.Addr) {}

// TestPathSink: every route the mapper stores reaches the graph and the
// path watch, under the peer's address as target.
func TestPathSink(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := startTargets(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), &probes{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	g := &fakeSink{}
	s := tp.sink(g)
	src, peer := netip.MustParseAddr("198.18.1.10"), netip.MustParseAddr("198.18.2.10")
	key := graph.RouteKey{Src: src, Dst: peer, SrcPort: 33436}
	for _, mid := range []string{"198.18.0.1", "198.18.0.1", "198.18.0.2"} {
		s.SetRoute(key, []graph.Hop{{Addr: src}, {Addr: netip.MustParseAddr(mid), RTT: time.Millisecond}, {Addr: peer, RTT: time.Millisecond}})
	}
	h := tp.paths.Histories(peer.String())
	if g.routes != 3 || len(h) != 1 || len(h[0].Paths) != 2 || len(h[0].Changes) != 1 || h[0].Flow.SrcPort != 33436 {
		t.Fatalf("graph got %d routes; path watch %+v", g.routes, h)
	}
}
