package targets

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/probe"
)

// fakeProber answers every probe after 1 ms, except to addresses in lose.
type fakeProber struct {
	mu    sync.Mutex
	lose  map[netip.Addr]bool
	opens int
}

type fakeFlow struct {
	p   *fakeProber
	dst netip.AddrPort
	k   probe.TargetKind
	seq uint64
}

func (p *fakeProber) Open(kind probe.TargetKind, dst netip.AddrPort, flow int) (probe.TargetFlow, error) {
	p.mu.Lock()
	p.opens++
	p.mu.Unlock()
	return &fakeFlow{p: p, dst: dst, k: kind}, nil
}

func (f *fakeFlow) Probe(ctx context.Context, timeout time.Duration) probe.TargetResult {
	f.seq++
	r := probe.TargetResult{Kind: f.k, Addr: f.dst.Addr(), Port: f.dst.Port(), Seq: f.seq, Sent: time.Now(), Source: probe.SourceUser}
	f.p.mu.Lock()
	lost := f.p.lose[f.dst.Addr()]
	f.p.mu.Unlock()
	if lost {
		r.Lost, r.Reply = true, probe.ReplyTimeout
	} else {
		r.RTT, r.Reply = time.Millisecond, probe.ReplyAnswer
	}
	return r
}

func (f *fakeFlow) Close() error { return nil }

func fakeResolve(_ context.Context, h string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(h); err == nil {
		return []netip.Addr{a}, nil
	}
	if h == "multi.test" {
		return []netip.Addr{netip.MustParseAddr("198.18.7.1"), netip.MustParseAddr("198.18.7.2")}, nil
	}
	return nil, os.ErrNotExist
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestManagerReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "targets.yml")
	write := func(s string) {
		t.Helper()
		// Write and rename, as editors and config management do.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("defaults: {interval: 20ms, timeout: 10ms}\ntargets:\n  - {name: gw, host: 198.18.1.1, probe: icmp}\n  - {name: lb, host: multi.test, port: 80, probe: tcp, flows: 2}\n")
	fp := &fakeProber{lose: map[netip.Addr]bool{netip.MustParseAddr("198.18.7.2"): true}}
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.File, cfg.Prober, cfg.Resolve, cfg.Registerer, cfg.Poll = file, fp, fakeResolve, reg, 20*time.Millisecond
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	up := func(target, kind, addr string) float64 {
		return testutil.ToFloat64(m.met.up.WithLabelValues(target, kind, addr))
	}
	waitFor(t, "samples of every address", func() bool {
		ts := m.Targets()
		return len(ts) == 2 && len(ts[1].Addrs) == 2 && ts[0].Addrs[0].Probes > 2 && ts[1].Addrs[1].Probes > 2
	})
	if up("gw", "icmp", "198.18.1.1") != 1 || up("lb", "tcp", "198.18.7.1") != 1 || up("lb", "tcp", "198.18.7.2") != 0 {
		t.Fatal("dnms_target_up wrong")
	}
	ts := m.Targets()
	if a := ts[1].Addrs[1]; a.Loss != 1 || a.Up || a.LastReply != probe.ReplyTimeout {
		t.Fatalf("lost address: %+v", a)
	}
	if a := ts[0].Addrs[0]; a.Loss != 0 || a.RTTP50 != 0.001 || a.Source != probe.SourceUser {
		t.Fatalf("answering address: %+v", a)
	}
	d, ok := m.Target("lb")
	if !ok || len(d.Samples) == 0 || d.Samples[0].Source != probe.SourceUser {
		t.Fatalf("detail: %+v", d)
	}

	// Every kind of bad file is rejected whole; the running set stays.
	for _, bad := range []string{
		"targets:\n  - {name: gw, host: 198.18.1.1, probe: icmp, bogus: 1}\n",
		"targets:\n  - {name: gw, host: 198.18.1.1, probe: tcp, port: 0}\n",
		"targets:\n  - {name: gw, host: 198.18.1.1, probe: sctp}\n",
		"targets:\n  - {name: gw, host: 198.18.1.1, probe: icmp}\n  - {name: gw, host: 198.18.1.2, probe: icmp}\n",
		"targets:\n  - {name: gw, host: unknown.test, probe: icmp}\n",
	} {
		write(bad)
		err := m.Reload()
		if err == nil || !strings.HasPrefix(err.Error(), file+":") {
			t.Fatalf("bad file accepted or error without file:line: %v", err)
		}
		if got := len(m.Targets()); got != 2 {
			t.Fatalf("after a bad reload %d targets, want the previous 2", got)
		}
	}
	if f := testutil.ToFloat64(m.met.reloads.WithLabelValues("failure")); f < 5 {
		t.Fatalf("dnms_targets_reloads_total{result=failure} = %v", f)
	}
	if testutil.ToFloat64(m.met.lastReload) != 0 {
		t.Fatal("last reload reported successful")
	}

	// A change on disk is picked up without SIGHUP: gw stays (same
	// definition), lb goes and its series with it, dns comes.
	before, _ := m.Target("gw")
	write("defaults: {interval: 20ms, timeout: 10ms}\ntargets:\n  - {name: gw, host: 198.18.1.1, probe: icmp}\n  - {name: dns, host: 198.18.3.1, port: 53, probe: udp}\n")
	waitFor(t, "the changed file", func() bool {
		ts := m.Targets()
		return len(ts) == 2 && ts[1].Name == "dns"
	})
	after, _ := m.Target("gw")
	if after.Addrs[0].Probes < before.Addrs[0].Probes {
		t.Fatal("an unchanged target restarted (its counts went back)")
	}
	if n := testutil.CollectAndCount(m.met.probes); n != 2 {
		// gw and dns; lb's two addresses are gone
		waitFor(t, "series of removed targets to go", func() bool { return testutil.CollectAndCount(m.met.probes) == 2 })
	}
	if testutil.ToFloat64(m.met.lastReload) != 1 {
		t.Fatal("last reload not reported successful")
	}
}

func TestManagerBadFileAtStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "t.yml")
	os.WriteFile(file, []byte("targets:\n  - {name: a, host: 198.18.0.1, probe: icmp, port: 5}\n"), 0o644)
	cfg := DefaultConfig()
	cfg.File, cfg.Prober, cfg.Resolve = file, &fakeProber{}, fakeResolve
	_, err := New(cfg)
	if err == nil || !strings.Contains(err.Error(), "t.yml:2:") {
		t.Fatalf("got %v", err)
	}
}
