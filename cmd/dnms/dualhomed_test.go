package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// TestDualHomedHost runs dnms with its defaults on a host wired to two
// leaves (address on lo, ECMP default route) and on its peers. The agent
// puts its programs on both uplinks, its peers lose < 1% of their pings to
// it, and every ack it sends (answered in the kernel) leaves by the
// interface `ip route get` names for that flow. With one uplink down, its
// acks all leave by the other and no link is left faulty two sweeps later.
func TestDualHomedHost(t *testing.T) {
	lab.RequireRoot(t)
	bin := buildDNMS(t)
	f := lab.New(t, lab.Config{Spines: 2, Leaves: 2, HostsPerLeaf: 1, DualHomed: 1})
	dual := f.Host("dual1")
	taps := map[string]*ackTap{}
	for _, ifn := range []string{"eth0", "eth1"} {
		taps[ifn] = startAckTap(t, f, dual, ifn)
	}
	c, err := demo.Start(demo.Config{Binary: bin, Fabric: f, LogDir: t.TempDir(),
		Args: []string{"-pingRouteInterval", "200ms", "-mapInterval", "100ms"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	ctx := context.Background()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s\n--- dual1 log tail:\n%s", fmt.Sprintf(format, a...), c.Tail("dual1", 30))
	}

	var hz healthMeta
	if err := demo.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return c.Get("dual1", "/healthz", &hz) }); err != nil {
		fail("healthz: %v", err)
	}
	if hz.TimeSource != "ebpf" || !slices.Equal(hz.EBPF.Ifaces, []string{"eth0", "eth1"}) {
		fail("dual1 healthz: time source %s, eBPF on %v; want ebpf on eth0 and eth1", hz.TimeSource, hz.EBPF.Ifaces)
	}

	// Loss to dual1, over the last 50 pings of every route to it.
	toDual := func(minSamples int) (samples, lost int, err error) {
		rs, err := c.Routes()
		if err != nil {
			return 0, 0, err
		}
		routes := 0
		for _, r := range rs {
			if r.Dst == dual.Addr {
				routes++
				if r.Metrics.Samples < minSamples {
					return 0, 0, fmt.Errorf("route %s has %d samples, want %d", r.ID, r.Metrics.Samples, minSamples)
				}
				samples += r.Metrics.Samples
				lost += r.Metrics.Lost
			}
		}
		if routes < 2 {
			return 0, 0, fmt.Errorf("%d routes to dual1 at the aggregator", routes)
		}
		return samples, lost, nil
	}
	if err := demo.WaitFor(ctx, 90*time.Second, time.Second, func() error { _, _, err := toDual(50); return err }); err != nil {
		fail("routes to dual1: %v", err)
	}
	samples, lost, _ := toDual(50)
	t.Logf("peers → dual1: %d of %d pings lost", lost, samples)
	if float64(lost) > 0.01*float64(samples) {
		t.Errorf("peers lose %d of %d pings to dual1, want < 1%%", lost, samples)
	}
	if n := metricValue(t, c, "dual1", "dnms_ebpf_reflected_total"); n == 0 {
		t.Errorf("dual1's kernel reflector answered nothing")
	}

	// Every ack left where the FIB says.
	checkAcks := func(want func(dev string) bool) {
		t.Helper()
		flows := 0
		for ifn, tap := range taps {
			for fl := range tap.flows() {
				dev := routeGetDev(t, f, dual, fl.dst, fl.sport)
				flows++
				if dev != ifn || !want(dev) {
					t.Errorf("ack %s:%d → %s left by %s; ip route get names %s", dual.Addr, fl.sport, fl.dst, ifn, dev)
				}
			}
		}
		if flows == 0 {
			t.Errorf("no acks captured")
		}
	}
	checkAcks(func(string) bool { return true })
	if len(taps["eth0"].flows()) == 0 || len(taps["eth1"].flows()) == 0 {
		t.Errorf("acks on eth0 %d flows, eth1 %d flows: want both uplinks used", len(taps["eth0"].flows()), len(taps["eth1"].flows()))
	}

	// One uplink down: acks move to eth1 and nothing stays faulty.
	sweep := 0.0
	for _, h := range f.Hosts {
		sweep = max(sweep, metricValue(t, c, h.Name, "dnms_mapper_sweep_duration_seconds"))
	}
	if err := f.SetDown(f.LinkBetween("dual1", "leaf1"), true); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	for _, tap := range taps {
		tap.reset()
	}
	// Within two sweeps every route through the dead uplink is re-traced
	// away; then no link may be left faulty.
	deadline := 2*time.Duration(sweep*float64(time.Second)) + 5*time.Second
	leaf1, self := f.Router("leaf1").Loopback.String(), dual.Addr.String()
	crossing := func(r graph.Route) bool {
		for i := 1; i < len(r.Hops); i++ {
			if a, b := r.Hops[i-1], r.Hops[i]; a == leaf1 && b == self || a == self && b == leaf1 {
				return true
			}
		}
		return false
	}
	if err := demo.WaitFor(ctx, deadline, 500*time.Millisecond, func() error {
		rs, err := c.Routes()
		if err != nil {
			return err
		}
		for _, r := range rs {
			if crossing(r) {
				return fmt.Errorf("route %v still crosses dual1–leaf1", r.Hops)
			}
		}
		return nil
	}); err != nil {
		t.Errorf("uplink down, %s later (two sweeps of %.1fs and slack): %v", deadline, sweep, err)
	}
	t.Logf("uplink down: routes moved off it after %s (sweep %.1fs)", time.Since(down).Round(time.Millisecond), sweep)
	// Pings in flight when the link went down are lost; they must not
	// leave a link marked faulty once pinged routes have moved (a few
	// seconds of samples at -pingRouteInterval 200ms).
	var faulty []graph.LinkHealth
	err = demo.WaitFor(ctx, 15*time.Second, time.Second, func() error {
		rows, err := c.Health()
		if err != nil {
			return err
		}
		faulty = faulty[:0]
		for _, r := range rows {
			if r.Verdict == graph.VerdictFaulty {
				faulty = append(faulty, r)
			}
		}
		if len(faulty) > 0 {
			return fmt.Errorf("faulty links: %+v", faulty)
		}
		return nil
	})
	if err != nil {
		t.Errorf("uplink down: %v", err)
	}
	if err := demo.WaitFor(ctx, 10*time.Second, 200*time.Millisecond, func() error {
		if len(taps["eth1"].flows()) == 0 {
			return fmt.Errorf("no acks on eth1 yet")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if n := len(taps["eth0"].flows()); n != 0 {
		t.Errorf("eth0 is down, yet %d ack flows left by it", n)
	}
	checkAcks(func(dev string) bool { return dev == "eth1" })
}

// ackTap records the flows of the dnms acks dual sends on one interface.
type ackTap struct {
	fd   int
	mu   sync.Mutex
	seen map[ackFlow]bool
}

type ackFlow struct {
	dst   netip.Addr
	sport uint16
}

func startAckTap(t *testing.T, f *lab.Fabric, h lab.Host, ifname string) *ackTap {
	t.Helper()
	tap := &ackTap{seen: map[ackFlow]bool{}}
	err := f.Do(h.NS, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL)) // outgoing frames reach ETH_P_ALL taps only
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tap.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("tap on %s %s: %v", h.Name, ifname, err)
	}
	t.Cleanup(func() { unix.Close(tap.fd) })
	go tap.read(h.Addr)
	return tap
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (tp *ackTap) read(self netip.Addr) {
	buf := make([]byte, 2048)
	for {
		n, from, err := unix.Recvfrom(tp.fd, buf, 0)
		if err != nil {
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype != unix.PACKET_OUTGOING || ll.Protocol != htons(unix.ETH_P_IP) || n < 14+20+8+8 {
			continue
		}
		ip := buf[14:n]
		if ip[0] != 0x45 || ip[9] != unix.IPPROTO_UDP || netip.AddrFrom4([4]byte(ip[12:16])) != self {
			continue
		}
		udp := ip[20:]
		payload := udp[8:]
		if binary.BigEndian.Uint16(udp[2:]) != 33435 || string(payload[:4]) != "DNMS" || payload[5] != 2 /* ack */ {
			continue
		}
		tp.mu.Lock()
		tp.seen[ackFlow{netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(udp[0:])}] = true
		tp.mu.Unlock()
	}
}

func (tp *ackTap) flows() map[ackFlow]bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	out := make(map[ackFlow]bool, len(tp.seen))
	for k := range tp.seen {
		out[k] = true
	}
	return out
}

func (tp *ackTap) reset() {
	tp.mu.Lock()
	tp.seen = map[ackFlow]bool{}
	tp.mu.Unlock()
}

var devRE = regexp.MustCompile(` dev (\S+)`)

// routeGetDev is the interface `ip route get` names for an ack of h's.
func routeGetDev(t *testing.T, f *lab.Fabric, h lab.Host, dst netip.Addr, sport uint16) string {
	t.Helper()
	b, err := f.Exec(h.NS, "ip", "route", "get", dst.String(), "from", h.Addr.String(), "ipproto", "udp",
		"sport", strconv.Itoa(int(sport)), "dport", "33435")
	if err != nil {
		t.Fatalf("ip route get: %v: %s", err, b)
	}
	m := devRE.FindSubmatch(b)
	if m == nil {
		t.Fatalf("ip route get: no dev in %q", b)
	}
	return string(m[1])
}

// metricValue sums the samples of an unlabelled or labelled metric on host.
func metricValue(t *testing.T, c *demo.Cluster, host, name string) float64 {
	t.Helper()
	body, err := c.GetRaw(host, "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", host, err)
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		fs := strings.Fields(line)
		v, _ := strconv.ParseFloat(fs[len(fs)-1], 64)
		sum += v
	}
	return sum
}
