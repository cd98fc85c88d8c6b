package targets_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/pathwatch"
	"github.com/dnms/dnms/internal/probe"
	"github.com/dnms/dnms/internal/probe/probelab"
	"github.com/dnms/dnms/internal/targets"
)

// nsProber opens flows inside a lab host's namespace.
type nsProber struct {
	f  *lab.Fabric
	ns string
	p  *probe.TargetProber
}

func (n nsProber) Open(kind probe.TargetKind, dst netip.AddrPort, flow int) (fl probe.TargetFlow, err error) {
	err = n.f.Do(n.ns, func() error { fl, err = n.p.Open(kind, dst, flow); return err })
	return fl, err
}

// TestLabPathChange: a traced target's path loses its spine; within two trace
// intervals one change event names the old and the new spine, and with the
// delay element adding 5 ms on the new path the verdict is worse.
func TestLabPathChange(t *testing.T) {
	f := lab.New(t, lab.Config{Spines: 2, Leaves: 2, HostsPerLeaf: 1})
	src, dst := f.Host("host1"), f.Host("host2")
	serveTargets(t, f, dst, f.Router("spine1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ec := probe.DefaultConfig()
	ec.LocalAddr, ec.Timestamps = src.Addr, "auto"
	eng, engDone, err := probelab.Start(ctx, f, src, ec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-engDone }()

	reg := prometheus.NewRegistry()
	wc := pathwatch.DefaultConfig()
	wc.Window, wc.Registerer = 3, reg
	w, err := pathwatch.New(wc)
	if err != nil {
		t.Fatal(err)
	}
	const traceInterval = time.Second
	file := filepath.Join(t.TempDir(), "targets.yml")
	os.WriteFile(file, []byte(fmt.Sprintf("targets:\n  - {name: svc, host: %s, port: 5353, probe: udp, interval: 100ms, timeout: 100ms, trace: true, traceInterval: %v}\n",
		dst.Addr, traceInterval)), 0o644)
	mc := targets.DefaultConfig()
	mc.File, mc.Prober, mc.Tracer, mc.TraceSrcPorts, mc.Paths, mc.Registerer = file,
		nsProber{f: f, ns: src.NS, p: newLabProber(t, src.Addr)}, eng, []uint16{ec.SrcPortStart}, w, reg
	m, err := targets.New(mc)
	if err != nil {
		t.Fatal(err)
	}
	mDone := make(chan error, 1)
	go func() { mDone <- m.Run(ctx) }()
	defer func() { cancel(); <-mDone }()

	poll := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > limit {
				t.Fatalf("%s: not within %v; histories %+v", what, limit, w.Histories("svc"))
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	var old []netip.Addr
	poll("first path", 10*time.Second, func() bool {
		h := w.Histories("svc")
		if len(h) == 1 && h[0].Current != "" {
			old = w.Current(h[0].Flow)
		}
		return len(old) == 5
	})
	spines := []netip.Addr{f.Router("spine1").Loopback, f.Router("spine2").Loopback}
	oldSpine := old[2]
	if !slices.Contains(spines, oldSpine) {
		t.Fatalf("path %v does not cross a spine at hop 2", old)
	}
	newSpine, oldName, newName := spines[0], "spine2", "spine1"
	if oldSpine == spines[0] {
		newSpine, oldName, newName = spines[1], "spine1", "spine2"
	}
	// Wait for a few traces on the old path: the verdict's "before" window.
	poll("traces on the first path", 10*time.Second, func() bool { return w.Histories("svc")[0].Paths[0].Traces >= 3 })
	if err := f.SetDelay(f.LinkBetween("leaf1", newName), "leaf1", 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The lab runs no routing protocol: a spine that lost one leaf link
	// would still get (and blackhole) the other leaf's replies. Downing
	// both of the old spine's links moves both directions to the other.
	for _, leaf := range []string{"leaf1", "leaf2"} {
		if err := f.SetDown(f.LinkBetween(leaf, oldName), true); err != nil {
			t.Fatal(err)
		}
	}
	took := poll("path change", 2*traceInterval+time.Second, func() bool { return len(w.Histories("svc")[0].Changes) > 0 })
	t.Logf("path change seen %v after the link went down", took)
	h := w.Histories("svc")[0]
	if len(h.Changes) != 1 {
		t.Fatalf("%d changes, want 1: %+v", len(h.Changes), h.Changes)
	}
	c := h.Changes[0]
	if !slices.Equal(c.OldHops, old) || c.NewHops[2] != newSpine || len(c.NewHops) != len(old) {
		t.Fatalf("change %v → %v; want spine %v → %v", c.OldHops, c.NewHops, oldSpine, newSpine)
	}
	poll("final verdict", 10*time.Second, func() bool { return !w.Histories("svc")[0].Changes[0].Verdict.Pending })
	v := w.Histories("svc")[0].Changes[0].Verdict
	t.Logf("verdict %+v", v)
	if !v.Worse || !slices.Contains(v.Reasons, "higher RTT p50") || v.RTTP50After-v.RTTP50Before < 0.004 {
		t.Fatalf("verdict %+v: want worse by higher RTT p50 (~5 ms)", v)
	}
	if n := testutil.ToFloat64(prometheusCounter(t, reg, "dnms_path_change_verdicts_total", "svc", "worse")); n != 1 {
		t.Fatalf("dnms_path_change_verdicts_total{target=svc,verdict=worse} = %v", n)
	}
	// /v1/targets shows the current path.
	st := m.Targets()
	if len(st) != 1 || len(st[0].Addrs) != 1 || len(st[0].Addrs[0].Paths) != 1 || st[0].Addrs[0].Paths[0].Hops[2] != newSpine {
		t.Fatalf("targets status: %+v", st)
	}
	if st[0].Addrs[0].Probes == 0 || st[0].Addrs[0].LastReply != probe.ReplyAnswer {
		t.Fatalf("target probes: %+v", st[0].Addrs[0])
	}
}

// prometheusCounter finds one series of a counter vector in reg.
func prometheusCounter(t *testing.T, reg *prometheus.Registry, name, target, verdict string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range mt.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["target"] == target && l["verdict"] == verdict {
				c.Add(mt.GetCounter().GetValue())
			}
		}
	}
	return c
}
