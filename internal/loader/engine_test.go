package loader

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/probe"
)

// TestEngineWithEBPFStamps runs a probe.Engine on host1 fed by host1's
// loader, pinging host2 whose kernel reflects: samples come out with source
// ebpf and the kernel-reflected mark, and the HMAC the kernel copied checks.
func TestEngineWithEBPFStamps(t *testing.T) {
	f, hA, hB := liveFabric(t)
	cfg := DefaultConfig()
	cfg.Ifaces = []string{hB.Ifname}
	liveLoader(t, f, hB, cfg)

	pcfg := probe.DefaultConfig()
	pcfg.LocalAddr = hA.Addr
	pcfg.EBPF, pcfg.Timestamps, pcfg.Reflect = true, "ebpf", false
	pcfg.SrcPortStart, pcfg.SrcPortEnd = 33436, 33437
	pcfg.Key = []byte("loader test probe key") // acks must carry the copied HMAC intact
	var e *probe.Engine
	if err := f.Do(hA.NS, func() error {
		var err error
		e, err = probe.New(pcfg)
		return err
	}); err != nil {
		t.Fatalf("engine: %v", err)
	}
	cfg.Ifaces = []string{hA.Ifname}
	var l *Loader
	if err := f.Do(hA.NS, func() error {
		var err error
		l, err = Load(cfg)
		return err
	}); err != nil {
		t.Fatalf("load: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	lDone, eDone := make(chan error, 1), make(chan error, 1)
	go func() { lDone <- l.Run(ctx, e.HandleStamp) }()
	go func() { eDone <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-eDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("engine Run: %v", err)
		}
		if err := <-lDone; err != nil {
			t.Errorf("loader Run: %v", err)
		}
		e.Close()
		l.Close()
	})
	if got := e.Source(); got != probe.SourceEBPF {
		t.Fatalf("engine source %q, want ebpf", got)
	}

	const n = 50
	results := make(map[uint64]probe.Result)
	deadline := time.After(waitFor + 2*pcfg.Timeout)
	for i := 0; i < n; i++ {
		if _, err := e.Ping(hB.Addr, 33436); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		select {
		case r := <-e.Results():
			results[r.Seq] = r
		case <-deadline:
			t.Fatalf("no result for ping %d; have %d", i, len(results))
		}
	}
	var ebpf, kref int
	for _, r := range results {
		if r.Lost {
			t.Errorf("seq %d lost", r.Seq)
			continue
		}
		if r.Source == graph.TimeSource(probe.SourceEBPF) {
			ebpf++
		}
		if r.KernelReflected {
			kref++
		}
		if r.RTT <= 0 || r.RTT > time.Second {
			t.Errorf("seq %d: RTT %v (T1 %d T2 %d T3 %d T4 %d, T4-T1 %d)", r.Seq, r.RTT, r.T1, r.T2, r.T3, r.T4, r.T4-r.T1)
		}
	}
	// Statistical bound: a stamp may miss the engine's StampWait under load.
	if ebpf < n*9/10 || kref != len(results) {
		t.Errorf("of %d samples: %d from ebpf stamps, %d kernel-reflected", len(results), ebpf, kref)
	}
	t.Logf("%d samples, %d ebpf, %d kernel-reflected", len(results), ebpf, kref)
}
