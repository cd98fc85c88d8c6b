package probe_test

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/probe"
)

// kreflectWindow is how many pings the prober keeps outstanding, spread over
// its 11 source ports.
const kreflectWindow = 256

// BenchmarkPingRateKernelReflector measures how many pings per second one
// prober engine can send, receive, stamp and match when the peer answers
// in its kernel: host1's engine pings host2 (same leaf, one routed hop) with
// up to kreflectWindow pings outstanding, and host2 has only the eBPF
// programs of internal/loader with the reflector on. host2 runs no engine
// and no loader reader, so nothing in userspace touches a ping there.
//
// cpu-µs/probe is this process's user+sys CPU (getrusage RUSAGE_SELF) over
// the run divided by the probes. Softirq work of the veth path (host1's
// transmit, the leaf's forwarding, host2's TC reflector and the way back)
// often runs on the sending or receiving thread and is then charged to this
// process, so the figure is conservative for the prober alone. maxRSS-MiB is
// the process's peak, including any benchmark that ran before. Root only;
// skips where eBPF is not allowed.
//
//	go test -run '^$' -bench PingRateKernelReflector -benchtime 200000x ./internal/probe/
func BenchmarkPingRateKernelReflector(b *testing.B) {
	for _, src := range []probe.Source{probe.SourceUser, probe.SourceKernel} {
		b.Run(string(src), func(b *testing.B) {
			f := lab.New(b, lab.Config{Prefix: lab.UniquePrefix(b), Spines: 1, Leaves: 1, HostsPerLeaf: 2})
			h1, h2 := f.Host("host1"), f.Host("host2")

			c := probe.DefaultConfig()
			c.LocalAddr = h1.Addr
			c.Timestamps = string(src)
			c.Logger = slog.New(slog.DiscardHandler)
			l := loadReflector(b, f, h2, c.PingPort)
			a := startEngine(b, f, h1, c)
			ports := int(c.SrcPortEnd-c.SrcPortStart) + 1

			// One ping per flow first: neighbour resolution and the
			// reflector's flow entries are not part of the rate.
			for i := range ports {
				a.Ping(h2.Addr, c.SrcPortStart+uint16(i))
			}
			for range ports {
				if r := <-a.Results(); r.Lost {
					b.Fatalf("warm-up ping on port %d lost: is the kernel reflector answering?", r.SrcPort)
				}
			}
			refl0 := l.Status().Reflected

			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			start := time.Now()
			outstanding, got, lost, kref := 0, 0, 0, 0
			count := func(r probe.Result) {
				outstanding--
				got++
				switch {
				case r.Lost:
					lost++
				case r.KernelReflected:
					kref++
				}
			}
			b.ResetTimer()
			for i := 0; got < b.N; {
				for outstanding < kreflectWindow && i < b.N {
					// A failed send comes back as a lost result.
					a.Ping(h2.Addr, c.SrcPortStart+uint16(i%ports))
					i++
					outstanding++
				}
				count(<-a.Results())
			drain:
				for got < b.N {
					select {
					case r := <-a.Results():
						count(r)
					default:
						break drain
					}
				}
			}
			el := time.Since(start)
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(b.N)/el.Seconds(), "probes/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/probe")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "probes/core-s")
			b.ReportMetric(float64(ru1.Maxrss)/1024, "maxRSS-MiB")
			b.ReportMetric(float64(lost), "lost")
			if acked := got - lost; kref != acked {
				b.Errorf("%d of %d acks were not reflected in the kernel", acked-kref, acked)
			}
			if n := l.Status().Reflected - refl0; n < uint64(got-lost) {
				b.Errorf("kernel reflector counted %d reflections for %d acks", n, got-lost)
			}
		})
	}
}

// loadReflector attaches the eBPF programs with the reflector on to h's
// uplink and closes them at cleanup. Nobody reads the ring buffer: the
// reflector needs no reader (Load fills in the local addresses), and with
// ReflectEvents off it emits nothing on this host anyway.
func loadReflector(b *testing.B, f *lab.Fabric, h lab.Host, pingPort uint16) *loader.Loader {
	b.Helper()
	var l *loader.Loader
	err := f.Do(h.NS, func() (err error) {
		cfg := loader.DefaultConfig()
		cfg.Ifaces, cfg.PingPort, cfg.Reflect = []string{h.Ifname}, pingPort, true
		cfg.Logger = slog.New(slog.DiscardHandler)
		l, err = loader.Load(cfg)
		return err
	})
	if err != nil {
		if loader.Supported() != nil {
			b.Skipf("eBPF not allowed here: %v", err)
		}
		b.Fatalf("load eBPF on %s: %v", h.Name, err)
	}
	b.Cleanup(func() {
		if err := l.Close(); err != nil {
			b.Errorf("close loader on %s: %v", h.Name, err)
		}
	})
	return l
}

// startEngine creates an engine with c inside h's namespace and runs it
// until cleanup.
func startEngine(b *testing.B, f *lab.Fabric, h lab.Host, c probe.Config) *probe.Engine {
	b.Helper()
	var e *probe.Engine
	if err := f.Do(h.NS, func() (err error) { e, err = probe.New(c); return err }); err != nil {
		b.Fatalf("engine on %s: %v", h.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			b.Errorf("engine Run on %s: %v", h.Name, err)
		}
	})
	return e
}
