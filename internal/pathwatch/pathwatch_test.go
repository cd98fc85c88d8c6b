package pathwatch

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
)

var flow = Flow{Target: "web", Src: netip.MustParseAddr("198.18.0.10"), Dst: netip.MustParseAddr("198.18.9.1"), SrcPort: 33436}

func route(rttMs float64, hops ...string) []graph.Hop {
	out := []graph.Hop{{Addr: flow.Src}}
	for i, h := range hops {
		var a netip.Addr
		if h != "*" {
			a = netip.MustParseAddr(h)
		}
		out = append(out, graph.Hop{Addr: a, RTT: time.Duration(rttMs * float64(i+1) / float64(len(hops)) * float64(time.Millisecond))})
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { c.t = c.t.Add(time.Second); return c.t }

func newWatcher(t *testing.T, mod func(*Config)) (*Watcher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := &clock{t: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)}
	cfg := DefaultConfig()
	cfg.Registerer, cfg.Now = reg, c.now
	if mod != nil {
		mod(&cfg)
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w, reg
}

func TestChangeWorseByRTT(t *testing.T) {
	w, _ := newWatcher(t, nil)
	a := route(1, "198.18.1.1", "198.18.0.1", "198.18.9.1")
	for range 5 {
		if w.ObservePath(flow, a) != nil {
			t.Fatal("change without a change")
		}
	}
	ch := w.ObservePath(flow, route(11, "198.18.1.1", "198.18.0.2", "198.18.9.1"))
	if ch == nil || ch.OldPath == ch.NewPath || ch.NewHops[2] != netip.MustParseAddr("198.18.0.2") ||
		ch.OldHops[2] != netip.MustParseAddr("198.18.0.1") || !ch.Verdict.Pending || ch.Verdict.HopDelta != 0 {
		t.Fatalf("change: %+v", ch)
	}
	for range 4 {
		w.ObservePath(flow, route(11, "198.18.1.1", "198.18.0.2", "198.18.9.1"))
	}
	h := w.Histories("web")
	if len(h) != 1 || len(h[0].Changes) != 1 || len(h[0].Paths) != 2 {
		t.Fatalf("history: %+v", h)
	}
	v := h[0].Changes[0].Verdict
	if v.Pending || !v.Worse || v.RTTP50Before != 0.001 || v.RTTP50After != 0.011 {
		t.Fatalf("verdict: %+v", v)
	}
	if got := testutil.ToFloat64(w.changesTotal.WithLabelValues("web", "worse")); got != 1 {
		t.Fatalf("dnms_path_change_verdicts_total{verdict=worse} = %v", got)
	}
	for _, p := range h[0].Paths {
		if p.Hops[3].Samples == 0 || p.Hops[3].RTTP50 == 0 {
			t.Fatalf("hop RTTs not kept: %+v", p.Hops)
		}
	}
}

func TestVerdicts(t *testing.T) {
	for _, c := range []struct {
		name        string
		newRoute    []graph.Hop
		lost        int
		worse, same bool
	}{
		{"more hops", route(1, "198.18.1.1", "198.18.0.2", "198.18.0.3", "198.18.9.1"), 0, true, false},
		{"fewer hops, same RTT", route(1, "198.18.1.1", "198.18.9.1"), 0, false, false},
		{"same length, same RTT", route(1, "198.18.1.1", "198.18.0.2", "198.18.9.1"), 0, false, true},
		{"loss", route(1, "198.18.1.1", "198.18.0.2", "198.18.9.1"), 3, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, _ := newWatcher(t, nil)
			for range 5 {
				w.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.1", "198.18.9.1"))
			}
			w.ObservePath(flow, c.newRoute)
			for i := range 4 {
				w.ObserveSample(flow, time.Millisecond, i < c.lost)
			}
			v := w.Histories("")[0].Changes[0].Verdict
			if v.Pending || v.Worse != c.worse || (c.same && (v.Worse || v.Better)) {
				t.Fatalf("verdict %+v", v)
			}
		})
	}
}

func TestHistoryBounded(t *testing.T) {
	w, _ := newWatcher(t, func(c *Config) { c.History = 3 })
	for i := range 20 {
		w.ObservePath(flow, route(1, "198.18.1.1", fmt.Sprintf("198.18.0.%d", i+1), "198.18.9.1"))
	}
	h := w.Histories("")[0]
	if len(h.Paths) != 3 || len(h.Changes) != 3 {
		t.Fatalf("%d paths, %d changes; want 3 each", len(h.Paths), len(h.Changes))
	}
	if h.Current != "198.18.0.10,198.18.1.1,198.18.0.20,198.18.9.1" {
		t.Fatalf("current %q", h.Current)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	w, _ := newWatcher(t, func(c *Config) { c.StateDir = dir })
	w.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.1", "198.18.9.1"))
	w.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.2", "198.18.9.1"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "paths.json" {
		t.Fatalf("state dir holds %v, want paths.json only", ents)
	}
	w2, _ := newWatcher(t, func(c *Config) { c.StateDir = dir })
	h := w2.Histories("web")
	if len(h) != 1 || len(h[0].Paths) != 2 || len(h[0].Changes) != 1 || h[0].Current != "198.18.0.10,198.18.1.1,198.18.0.2,198.18.9.1" {
		t.Fatalf("after restart: %+v", h)
	}
	// The same path again is no change; the old one back is.
	if w2.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.2", "198.18.9.1")) != nil {
		t.Fatal("change after restart on the same path")
	}
	if w2.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.1", "198.18.9.1")) == nil {
		t.Fatal("no change back to the old path")
	}
	// A corrupt file is an error, not a silent reset.
	os.WriteFile(filepath.Join(dir, "paths.json"), []byte("{"), 0o644)
	if _, err := New(Config{StateDir: dir}); err == nil {
		t.Fatal("corrupt state accepted")
	}
}

func TestNoStateDirWritesNothing(t *testing.T) {
	wd, _ := os.Getwd()
	before, _ := os.ReadDir(wd)
	w, _ := newWatcher(t, nil)
	w.ObservePath(flow, route(1, "198.18.1.1"))
	w.ObservePath(flow, route(1, "198.18.1.2"))
	w.Close()
	after, _ := os.ReadDir(wd)
	if len(before) != len(after) {
		t.Fatal("files appeared without -stateDir")
	}
}

// TestSilentHopIsNoChange: a router that skips one answer is not a path
// change (SmokeTrace would alert on every rate-limited hop otherwise).
func TestSilentHopIsNoChange(t *testing.T) {
	w, _ := newWatcher(t, nil)
	w.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.1", "198.18.9.1"))
	if ch := w.ObservePath(flow, route(1, "198.18.1.1", "*", "198.18.9.1")); ch != nil {
		t.Fatalf("silent hop reported as a change: %+v", ch)
	}
	h := w.Histories("")[0]
	if len(h.Paths) != 1 || h.Paths[0].Traces != 2 {
		t.Fatalf("paths %+v", h.Paths)
	}
	if w.ObservePath(flow, route(1, "198.18.1.1", "198.18.0.2", "198.18.9.1")) == nil {
		t.Fatal("a real change missed")
	}
}
