package targets_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/probe"
	"github.com/dnms/dnms/internal/targets"
)

// BenchmarkTargets1000 runs the targets manager of one agent (host1 of a
// lab fabric) against 1,000 targets on host2 — 334 icmp, 333 tcp to
// closed ports (RST), 333 udp to closed ports (port unreachable) — at a 1 s
// and a 100 ms interval, and reports the probes per second it sustains,
// the CPU it spends (cores, µs per probe) and its RSS above the same
// process with an empty targets file (the baseline, measured first).
func BenchmarkTargets1000(b *testing.B) {
	f := lab.New(b, lab.Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	src, dst := f.Host("host1"), f.Host("host2")
	// The kernel's global ICMP budget (1,000 errors/s by default) would
	// otherwise cap the udp targets' port unreachable answers.
	if out, err := f.Exec(dst.NS, "sysctl", "-qw", "net.ipv4.icmp_msgs_per_sec=1000000", "net.ipv4.icmp_msgs_burst=100000"); err != nil {
		b.Fatalf("sysctl: %v %s", err, out)
	}
	base := runTargetsLoad(b, f, src, dst, 0, time.Second, 3*time.Second)
	b.Logf("baseline (no targets): %.2f cores, RSS %.1f MB", base.cores, base.rssMB)
	for _, intv := range []time.Duration{time.Second, 100 * time.Millisecond} {
		b.Run(fmt.Sprintf("interval=%v", intv), func(b *testing.B) {
			var r loadResult
			for range b.N {
				r = runTargetsLoad(b, f, src, dst, 1000, intv, 5*time.Second)
			}
			want := 1000 / intv.Seconds()
			b.ReportMetric(r.probesPerSec, "probes/s")
			b.ReportMetric(r.probesPerSec/want, "of-schedule")
			b.ReportMetric(r.cores-base.cores, "cores")
			b.ReportMetric(1e6*(r.cores-base.cores)/r.probesPerSec, "cpu-µs/probe")
			b.ReportMetric(r.rssMB-base.rssMB, "MB-RSS-over-baseline")
			b.ReportMetric(r.loss, "loss")
		})
	}
}

type loadResult struct {
	probesPerSec, cores, rssMB, loss float64
}

func runTargetsLoad(b *testing.B, f *lab.Fabric, src, dst lab.Host, n int, intv, dur time.Duration) loadResult {
	b.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "defaults: {interval: %v, timeout: %v}\ntargets:\n", intv, min(intv, 500*time.Millisecond))
	for i := range n {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&sb, "  - {name: t%d, host: %s, probe: icmp}\n", i, dst.Addr)
		case 1:
			fmt.Fprintf(&sb, "  - {name: t%d, host: %s, probe: tcp, port: %d}\n", i, dst.Addr, 20000+i)
		case 2:
			fmt.Fprintf(&sb, "  - {name: t%d, host: %s, probe: udp, port: %d}\n", i, dst.Addr, 20000+i)
		}
	}
	file := filepath.Join(b.TempDir(), "targets.yml")
	os.WriteFile(file, []byte(sb.String()), 0o644)
	p, err := probe.NewTargetProber(probe.TargetConfig{LocalAddr: src.Addr, Timestamps: cmpOr(os.Getenv("DNMS_BENCH_TS"), "auto")})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	cfg := targets.DefaultConfig()
	cfg.File, cfg.Prober, cfg.Registerer = file, nsProber{f: f, ns: src.NS, p: p}, prometheus.NewRegistry()
	m, err := targets.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	count := func() (probes, lost uint64) {
		for _, t := range m.Targets() {
			for _, a := range t.Addrs {
				probes += a.Probes
				lost += a.Lost
			}
		}
		return
	}
	time.Sleep(intv + time.Second) // warm-up: every target past its random phase
	p0, l0 := count()
	c0, t0 := cpuTime(), time.Now()
	time.Sleep(dur)
	p1, l1 := count()
	c1, el := cpuTime(), time.Since(t0)
	r := loadResult{probesPerSec: float64(p1-p0) / el.Seconds(), cores: (c1 - c0).Seconds() / el.Seconds(), rssMB: rssMB()}
	if p1 > p0 {
		r.loss = float64(l1-l0) / float64(p1-p0)
	}
	if os.Getenv("DNMS_BENCH_DEBUG") != "" {
		byKind := map[probe.TargetKind][2]uint64{}
		replies := map[string]int{}
		for _, t := range m.Targets() {
			for _, a := range t.Addrs {
				v := byKind[t.Probe]
				v[0] += a.Probes
				v[1] += a.Lost
				byKind[t.Probe] = v
				replies[a.LastReply]++
			}
		}
		b.Logf("probes, lost by kind: %v; last replies %v", byKind, replies)
		raw, _ := f.Exec(src.NS, "cat", "/proc/net/raw")
		b.Logf("/proc/net/raw on %s:\n%s", src.Name, raw)
	}
	cancel()
	<-done
	return r
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssMB() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkTargetRTTError compares every answered probe's RTT with an
// AF_PACKET capture on the prober's interface (the probe leaving, the
// answer arriving), per probe kind and time source, on a lab fabric:
// p50 and p99 of |RTT − capture RTT|.
func BenchmarkTargetRTTError(b *testing.B) {
	f := lab.New(b, lab.Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	src, dst := f.Host("host1"), f.Host("host2")
	lt := serveTargets(b, f, dst, f.Router("spine1"))
	capt := startTargetCapture(b, f, src)
	for _, ts := range []string{"ebpf", "kernel", "user"} {
		var p *probe.TargetProber
		if ts == "ebpf" {
			p, _ = newEBPFProber(b, f, src) // closed at cleanup
		} else {
			var err error
			if p, err = probe.NewTargetProber(probe.TargetConfig{LocalAddr: src.Addr, Timestamps: ts}); err != nil {
				b.Fatal(err)
			}
		}
		for _, c := range []struct {
			kind probe.TargetKind
			dst  netip.AddrPort
		}{{probe.KindICMP, netip.AddrPortFrom(lt.host, 0)}, {probe.KindTCP, lt.tcpOpen}, {probe.KindUDP, lt.udpOpen}} {
			b.Run(fmt.Sprintf("%s/%s", c.kind, ts), func(b *testing.B) {
				var fl probe.TargetFlow
				if err := f.Do(src.NS, func() (err error) { fl, err = p.Open(c.kind, c.dst, 0); return err }); err != nil {
					b.Fatal(err)
				}
				defer fl.Close()
				var errs []time.Duration
				for range b.N {
					for range 300 {
						r := fl.Probe(context.Background(), 200*time.Millisecond)
						if r.Lost || (ts != "user" && r.Source != probe.Source(ts)) {
							continue
						}
						if wire, ok := capt.rtt(r); ok {
							d := r.RTT - wire
							errs = append(errs, max(d, -d))
						}
						time.Sleep(2 * time.Millisecond) // pacing
					}
				}
				if len(errs) < 100 {
					b.Fatalf("only %d probes matched in the capture", len(errs))
				}
				slices.Sort(errs)
				b.ReportMetric(float64(errs[len(errs)/2].Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(errs[len(errs)*99/100].Nanoseconds())/1e3, "p99-µs")
				b.ReportMetric(float64(len(errs)), "samples")
			})
		}
		p.Close()
	}
}

// targetCapture records, by (protocol, our port or echo id, sequence), when
// each probe left and its answer arrived on one interface (AF_PACKET,
// SO_TIMESTAMPNS: dev_queue_xmit for outgoing, netif_receive for incoming).
type targetCapture struct {
	fd     int
	mu     sync.Mutex
	tx, rx map[capKey]int64
	done   chan struct{}
}

type capKey struct {
	proto uint8
	port  uint16
	seq   uint32
}

func startTargetCapture(b testing.TB, f *lab.Fabric, h lab.Host) *targetCapture {
	c := &targetCapture{tx: map[capKey]int64{}, rx: map[capKey]int64{}, done: make(chan struct{})}
	err := f.Do(h.NS, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		ifr, err := unix.NewIfreq(h.Ifname)
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: int(ifr.Uint32())}); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1)
	})
	if err != nil {
		b.Fatal(err)
	}
	go c.loop()
	b.Cleanup(func() { close(c.done); unix.Close(c.fd) })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *targetCapture) loop() {
	buf, oob := make([]byte, 2048), make([]byte, 128)
	for {
		select {
		case <-c.done:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			time.Sleep(100 * time.Microsecond) // polled: see internal/probe's capture
			continue
		}
		var ts int64
		cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, cm := range cms {
			if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SO_TIMESTAMPNS_NEW && len(cm.Data) >= 16 {
				ts = int64(binary.NativeEndian.Uint64(cm.Data[0:8]))*1e9 + int64(binary.NativeEndian.Uint64(cm.Data[8:16]))
			}
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil || n < 14+20+8 || binary.BigEndian.Uint16(buf[12:14]) != 0x0800 {
			continue
		}
		c.frame(buf[14:n], ll.Pkttype == unix.PACKET_OUTGOING, ts)
	}
}

func (c *targetCapture) frame(ip []byte, out bool, ts int64) {
	ihl := int(ip[0]&0xf) * 4
	if len(ip) < ihl+8 {
		return
	}
	l4 := ip[ihl:]
	var k capKey
	switch ip[9] {
	case 1: // echo request out, echo reply in, or port unreachable quoting a udp probe
		if q := l4[8:]; !out && l4[0] == 3 && len(q) >= 20 && q[9] == 17 {
			qihl := int(q[0]&0xf) * 4
			if len(q) < qihl+20 {
				return
			}
			k = capKey{17, binary.BigEndian.Uint16(q[qihl : qihl+2]), uint32(binary.BigEndian.Uint64(q[qihl+12 : qihl+20]))}
			break
		}
		if (out && l4[0] != 8) || (!out && l4[0] != 0) {
			return
		}
		k = capKey{1, binary.BigEndian.Uint16(l4[4:6]), uint32(binary.BigEndian.Uint16(l4[6:8]))}
	case 6:
		if len(l4) < 20 {
			return
		}
		if out && l4[13] == 0x02 {
			k = capKey{6, binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint32(l4[4:8])}
		} else if !out && l4[13]&0x10 != 0 && l4[13]&0x06 != 0 {
			k = capKey{6, binary.BigEndian.Uint16(l4[2:4]), binary.BigEndian.Uint32(l4[8:12]) - 1}
		} else {
			return
		}
	case 17: // our payload "DNMT" + seq, echoed back by the responder
		if len(l4) < 8+12 {
			return
		}
		port := binary.BigEndian.Uint16(l4[0:2])
		if !out {
			port = binary.BigEndian.Uint16(l4[2:4])
		}
		k = capKey{17, port, uint32(binary.BigEndian.Uint64(l4[12:20]))}
	default:
		return
	}
	c.mu.Lock()
	if out {
		c.tx[k] = ts
	} else if _, seen := c.rx[k]; !seen {
		c.rx[k] = ts
	}
	c.mu.Unlock()
}

// rtt is the capture's RTT of r, waiting up to 100 ms for the frames.
func (c *targetCapture) rtt(r probe.TargetResult) (time.Duration, bool) {
	k := capKey{port: r.SrcPort, seq: uint32(r.Seq)}
	switch r.Kind {
	case probe.KindICMP:
		k.proto, k.seq = 1, uint32(r.Seq&0xffff)
	case probe.KindTCP:
		k.proto = 6
	case probe.KindUDP:
		k.proto = 17
	}
	for range 100 {
		c.mu.Lock()
		tx, ok1 := c.tx[k]
		rx, ok2 := c.rx[k]
		c.mu.Unlock()
		if ok1 && ok2 {
			return time.Duration(rx - tx), true
		}
		time.Sleep(time.Millisecond)
	}
	return 0, false
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
