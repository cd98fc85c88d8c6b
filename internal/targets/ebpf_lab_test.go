package targets_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/probe"
)

// newEBPFProber loads the TC programs on h's uplink and returns a target
// prober whose flows they stamp (the agent's wiring: the loader's ring
// reader feeds the prober's target stamps). It skips when eBPF is not
// allowed here.
func newEBPFProber(tb testing.TB, f *lab.Fabric, h lab.Host) (*probe.TargetProber, *loader.Loader) {
	tb.Helper()
	var l *loader.Loader
	if err := f.Do(h.NS, func() (err error) {
		cfg := loader.DefaultConfig()
		cfg.Ifaces, cfg.Logger = []string{h.Ifname}, slog.New(slog.DiscardHandler)
		l, err = loader.Load(cfg)
		return err
	}); err != nil {
		if loader.Supported() != nil {
			tb.Skipf("eBPF not allowed here: %v", err)
		}
		tb.Fatalf("load eBPF on %s: %v", h.Name, err)
	}
	tb.Cleanup(func() { l.Close() })
	cfg := probe.DefaultTargetConfig()
	cfg.LocalAddr, cfg.Timestamps, cfg.EBPF = h.Addr, "ebpf", l
	p, err := probe.NewTargetProber(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, p.HandleStamp) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			tb.Errorf("loader Run: %v", err)
		}
	})
	return p, l
}

// TestLabTargetEBPFMatchesCapture: with the TC programs loaded, icmp, tcp
// and udp target samples (answer and port unreachable) come from ebpf
// stamps and agree with an AF_PACKET capture within the pings' bounds
// (TestLabEBPF: p50 ≤ 20 µs, max ≤ 5 ms); closing the flows stops the
// stamping.
func TestLabTargetEBPFMatchesCapture(t *testing.T) {
	f := lab.New(t, lab.Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	src, dst := f.Host("host1"), f.Host("host2")
	lt := serveTargets(t, f, dst, f.Router("spine1"))
	capt := startTargetCapture(t, f, src)
	p, l := newEBPFProber(t, f, src)
	for _, c := range []struct {
		name string
		kind probe.TargetKind
		dst  netip.AddrPort
	}{
		{"icmp", probe.KindICMP, netip.AddrPortFrom(lt.host, 0)},
		{"tcp syn-ack", probe.KindTCP, lt.tcpOpen},
		{"tcp rst", probe.KindTCP, lt.tcpClosed},
		{"udp answer", probe.KindUDP, lt.udpOpen},
		{"udp port unreachable", probe.KindUDP, lt.udpClosed},
	} {
		fl := openIn(t, f, src.NS, p, c.kind, c.dst, 0)
		var errs []time.Duration
		n, ebpf := 0, 0
		for _, r := range runFlows([]probe.TargetFlow{fl}, 60, 5*time.Millisecond, 200*time.Millisecond) {
			if r.Lost {
				continue
			}
			n++
			if r.Source != probe.SourceEBPF {
				continue
			}
			ebpf++
			if wire, ok := capt.rtt(r); ok {
				d := r.RTT - wire
				errs = append(errs, max(d, -d))
			}
		}
		fl.Close()
		if n < 55 || ebpf < n*95/100 || len(errs) < ebpf*9/10 {
			t.Fatalf("%s: %d answered, %d from ebpf stamps, %d matched in the capture", c.name, n, ebpf, len(errs))
		}
		sort.Slice(errs, func(i, j int) bool { return errs[i] < errs[j] })
		p50, p90 := errs[len(errs)/2], errs[len(errs)*9/10]
		t.Logf("%s: ebpf |RTT − capture| p50 %v, p90 %v, max %v over %d samples", c.name, p50, p90, errs[len(errs)-1], len(errs))
		if p50 > 20*time.Microsecond || errs[len(errs)-1] > 5*time.Millisecond {
			t.Errorf("%s: ebpf RTT off the capture by p50 %v, max %v", c.name, p50, errs[len(errs)-1])
		}
	}
	st := l.Status()
	if st.TargetTxStamps < 250 || st.TargetRxStamps < 250 {
		t.Errorf("loader counted %d target tx and %d rx stamps, want ≥ 250 each", st.TargetTxStamps, st.TargetRxStamps)
	}
	// Every flow is closed: nothing is watched, so a probe from a new
	// kernel-stamped prober is not stamped by the programs.
	before := l.Status().TargetTxStamps
	kp := newLabProber(t, src.Addr)
	fl := openIn(t, f, src.NS, kp, probe.KindICMP, netip.AddrPortFrom(lt.host, 0), 0)
	for _, r := range runFlows([]probe.TargetFlow{fl}, 5, time.Millisecond, 200*time.Millisecond) {
		if r.Source == probe.SourceEBPF {
			t.Fatalf("a prober without the loader reported source ebpf")
		}
	}
	if after := l.Status().TargetTxStamps; after != before {
		t.Errorf("%d target stamps for unwatched flows", after-before)
	}
}
