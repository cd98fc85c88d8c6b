package probe_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/probe"
	"github.com/dnms/dnms/internal/probe/probelab"
)

// kreflectWindow is how many pings the prober keeps outstanding, spread over
// its 11 source ports.
const kreflectWindow = 512

// kreflectBurst caps one top-up of the window: the receiving veth's NAPI
// ring holds 256 frames.
const kreflectBurst = 64

// BenchmarkPingRateKernelReflector measures how many pings per second one
// prober engine can send, receive, stamp and match when the peer answers
// in its kernel: host1's engine pings host2 over a direct veth (a cable:
// no router on the way, so the lab's forwarding costs nothing) with up to
// kreflectWindow pings outstanding, and host2 has only the eBPF programs of
// internal/loader with the reflector on: nothing in userspace touches a ping
// there.
//
// Both ends of the cable receive in their own NAPI kernel thread (GRO on,
// threaded NAPI), as a NIC's receive runs off the sender's thread. host2's
// thread is the peer machine's work; host1's (IP, UDP, socket queue, the TC
// program) is the agent host's and is counted.
//
//	cpu-µs/probe       this process's user+sys CPU (getrusage) per probe
//	host-cpu-µs/probe  that plus host1's receive thread (schedstat)
//	probes/core-s      probes per second of host CPU: 1e6 / host-cpu-µs/probe
//	probes/s           wall rate
//	maxRSS-MiB         the process's peak, including any benchmark before it
//
// With DNMS_BENCH_AGENT_CPU=n, run under `taskset -c n`, host1's receive
// thread is pinned to CPU n with the process and host2's to the other CPUs:
// probes/s is then what one core does for the agent host. Root only; skips
// where eBPF is not allowed.
//
//	go test -c -o /tmp/probe.test ./internal/probe && cd internal/probe &&
//	DNMS_BENCH_AGENT_CPU=1 taskset -c 1 /tmp/probe.test -test.run '^$' \
//	    -test.bench PingRateKernelReflector -test.benchtime 200000x
func BenchmarkPingRateKernelReflector(b *testing.B) {
	for _, src := range []probe.Source{probe.SourceUser, probe.SourceKernel, probe.SourceEBPF} {
		b.Run(string(src), func(b *testing.B) {
			f := lab.New(b, lab.Config{Prefix: lab.UniquePrefix(b), Spines: 1, Leaves: 1, HostsPerLeaf: 2})
			h1, h2 := cable(b, f, f.Host("host1"), f.Host("host2"))
			rxThread := threadedNAPI(b, f, h1, h2)

			c := probe.DefaultConfig()
			c.LocalAddr = h1.Addr
			c.Timestamps = string(src)
			c.Logger = slog.New(slog.DiscardHandler)
			c.EBPF = src == probe.SourceEBPF
			l := loadTC(b, f, h2, c.PingPort, true)
			var stamper *loader.Loader
			if c.EBPF {
				// host1's stamps: its own programs, no reflector, read
				// by a loader feeding the engine, kicked on acks.
				stamper = loadTC(b, f, h1, c.PingPort, false)
				c.StampKick = stamper.Kick
			}
			a := startEngine(b, f, h1, c)
			if stamper != nil {
				runLoader(b, stamper, a.HandleStamp)
			}
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
			rx0 := schedNS(b, rxThread)
			start := time.Now()
			outstanding, got, lost, kref, want := 0, 0, 0, 0, 0
			count := func(r probe.Result) {
				outstanding--
				got++
				switch {
				case r.Lost:
					lost++
				case r.KernelReflected:
					kref++
				}
				if !r.Lost && string(r.Source) == string(src) {
					want++
				}
			}
			b.ResetTimer()
			flows := make([]probe.FlowKey, 0, kreflectWindow)
			for i := 0; got < b.N; {
				// Top the window up in one batch, as the pinger sends the
				// pings due in one tick.
				flows = flows[:0]
				for outstanding+len(flows) < kreflectWindow && len(flows) < kreflectBurst && i < b.N {
					flows = append(flows, probe.FlowKey{Peer: h2.Addr, SrcPort: c.SrcPortStart + uint16(i%ports)})
					i++
				}
				if len(flows) > 0 {
					outstanding += len(flows)
					a.PingBatch(flows) // a failed send comes back as a lost result
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
			rx := time.Duration(schedNS(b, rxThread) - rx0)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(b.N)/el.Seconds(), "probes/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/probe")
			b.ReportMetric(float64((cpu+rx).Nanoseconds())/1e3/float64(b.N), "host-cpu-µs/probe")
			b.ReportMetric(float64(b.N)/(cpu+rx).Seconds(), "probes/core-s")
			b.ReportMetric(float64(ru1.Maxrss)/1024, "maxRSS-MiB")
			b.ReportMetric(float64(lost), "lost")
			b.ReportMetric(100*float64(want)/float64(max(1, got-lost)), "%stamped-"+string(src))
			if acked := got - lost; kref != acked {
				b.Errorf("%d of %d acks were not reflected in the kernel", acked-kref, acked)
			}
			if n := l.Status().Reflected - refl0; n < uint64(got-lost) {
				b.Errorf("kernel reflector counted %d reflections for %d acks", n, got-lost)
			}
		})
	}
}

// cable joins h1 and h2 with a direct veth (198.18.254.1/30 and .2/30,
// offloads off as on every lab link) and returns both hosts as seen on it.
// It goes away with the fabric's namespaces.
func cable(b *testing.B, f *lab.Fabric, h1, h2 lab.Host) (lab.Host, lab.Host) {
	b.Helper()
	const ifname = "dnmsc0"
	run := func(ns string, args ...string) {
		if out, err := f.Exec(ns, args...); err != nil {
			b.Fatalf("cable: %v: %s", err, out)
		}
	}
	run(h1.NS, "ip", "link", "add", "name", ifname, "type", "veth", "peer", "name", ifname, "netns", h2.NS)
	h1.Addr, h2.Addr = netip.MustParseAddr("198.18.254.1"), netip.MustParseAddr("198.18.254.2")
	for _, h := range []*lab.Host{&h1, &h2} {
		h.Ifname = ifname
		run(h.NS, "ip", "addr", "add", h.Addr.String()+"/30", "dev", ifname)
		run(h.NS, "ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso", "off")
		run(h.NS, "ip", "link", "set", "dev", ifname, "up")
	}
	return h1, h2
}

// threadedNAPI gives agent's and peer's cable ends their own NAPI receive
// thread (GRO on, threaded NAPI) and returns the agent's. With
// DNMS_BENCH_AGENT_CPU=n the agent's thread is pinned to CPU n and the
// peer's to every other CPU.
func threadedNAPI(b *testing.B, f *lab.Fabric, agent, peer lab.Host) int {
	b.Helper()
	set := func(h lab.Host) int {
		before := napiThreads(b)
		if out, err := f.Exec(h.NS, "sh", "-c", fmt.Sprintf(
			"ethtool -K %[1]s gro on && echo 1 > /sys/class/net/%[1]s/threaded", h.Ifname)); err != nil {
			b.Fatalf("threaded NAPI on %s/%s: %v: %s", h.Name, h.Ifname, err, out)
		}
		var pid int
		for p := range napiThreads(b) {
			if !before[p] {
				if pid != 0 {
					b.Fatalf("more than one new NAPI thread for %s/%s", h.Name, h.Ifname)
				}
				pid = p
			}
		}
		if pid == 0 {
			b.Fatalf("no NAPI thread appeared for %s/%s", h.Name, h.Ifname)
		}
		return pid
	}
	peerPid, agentPid := set(peer), set(agent)
	if v := os.Getenv("DNMS_BENCH_AGENT_CPU"); v != "" {
		cpu, err := strconv.Atoi(v)
		if err != nil || cpu < 0 || cpu >= 1024 {
			b.Fatalf("DNMS_BENCH_AGENT_CPU=%q: want a CPU number", v)
		}
		var mine, rest unix.CPUSet
		mine.Set(cpu)
		for c := range 1024 { // the kernel keeps the online ones
			if c != cpu {
				rest.Set(c)
			}
		}
		if err := unix.SchedSetaffinity(peerPid, &rest); err != nil {
			b.Fatalf("pin NAPI thread %d: %v", peerPid, err)
		}
		if err := unix.SchedSetaffinity(agentPid, &mine); err != nil {
			b.Fatalf("pin NAPI thread %d: %v", agentPid, err)
		}
	}
	return agentPid
}

// napiThreads lists the pids of the kernel's NAPI threads.
func napiThreads(b *testing.B) map[int]bool {
	b.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	out := map[int]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.HasPrefix(string(comm), "napi/") {
			out[pid] = true
		}
	}
	return out
}

// schedNS is the CPU time, in ns, thread pid has run (/proc/pid/schedstat).
func schedNS(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
	if err != nil {
		b.Fatalf("schedstat of %d: %q", pid, raw)
	}
	return ns
}

// loadTC attaches the eBPF programs to h's uplink, with the in-kernel
// reflector on or off, and closes them at cleanup. A reflector needs no
// reader (Load fills in the local addresses) and with ReflectEvents off
// emits nothing; a stamper's ring is read by runLoader.
func loadTC(b testing.TB, f *lab.Fabric, h lab.Host, pingPort uint16, reflect bool, mod ...func(*loader.Config)) *loader.Loader {
	b.Helper()
	var l *loader.Loader
	err := f.Do(h.NS, func() (err error) {
		cfg := loader.DefaultConfig()
		cfg.Ifaces, cfg.PingPort, cfg.Reflect = []string{h.Ifname}, pingPort, reflect
		cfg.Logger = slog.New(slog.DiscardHandler)
		for _, m := range mod {
			m(&cfg)
		}
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

// runLoader feeds l's stamps to fn until cleanup.
func runLoader(b testing.TB, l *loader.Loader, fn func(probe.Stamp)) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, fn) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			b.Errorf("loader Run: %v", err)
		}
	})
}

// startEngine creates an engine with c inside h's namespace and runs it
// until cleanup.
func startEngine(b *testing.B, f *lab.Fabric, h lab.Host, c probe.Config) *probe.Engine {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, done, err := probelab.Start(ctx, f, h, c)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("engine Run on %s: %v", h.Name, err)
		}
	})
	return e
}
