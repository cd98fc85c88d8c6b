package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const probeTimeout = 2 * time.Second

// spineOf returns the spine a UDP flow src:sport → dst:dport crosses, by a
// TTL-2 probe (hop 1 is the source leaf, hop 2 the spine).
func spineOf(t *testing.T, f *Fabric, src string, dst netip.Addr, sport, dport uint16) netip.Addr {
	t.Helper()
	a, err := f.ProbeHop(src, dst, sport, dport, 2, probeTimeout)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	return a
}

// udpSink counts datagrams per source port on host:port.
type udpSink struct {
	conn net.PacketConn
	mu   sync.Mutex
	n    map[uint16]int
}

func newSink(t *testing.T, f *Fabric, host string, port uint16) *udpSink {
	t.Helper()
	s := &udpSink{n: map[uint16]int{}}
	err := f.Do(host, func() error {
		var err error
		s.conn, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("sink on %s:%d: %v", host, port, err)
	}
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := s.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.n[uint16(from.(*net.UDPAddr).Port)]++
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *udpSink) count(sport uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[sport]
}

func (s *udpSink) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.n)
}

// sendFlows sends n datagrams on each flow host:sport → dst:dport.
func sendFlows(t *testing.T, f *Fabric, host string, dst netip.Addr, dport uint16, sports []uint16, n int) {
	t.Helper()
	conns := make([]net.PacketConn, len(sports))
	err := f.Do(host, func() error {
		for i, sp := range sports {
			c, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", sp))
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		t.Fatalf("flow sockets on %s: %v", host, err)
	}
	to := &net.UDPAddr{IP: dst.AsSlice(), Port: int(dport)}
	for k := 0; k < n; k++ {
		for i, c := range conns {
			if _, err := c.WriteTo([]byte("dnms-lab-flow"), to); err != nil {
				t.Fatalf("send on flow %d: %v", sports[i], err)
			}
		}
		time.Sleep(time.Millisecond) // pacing, not synchronisation
	}
}

// waitCounts polls until every flow's count satisfies ok or the deadline
// passes, then reports what it last saw.
func waitCounts(t *testing.T, s *udpSink, sports []uint16, want func(sport uint16, got int) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var bad []string
		for _, sp := range sports {
			if got := s.count(sp); !want(sp, got) {
				bad = append(bad, fmt.Sprintf("%d:%d", sp, got))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: flows (sport:received) not as expected: %s", what, strings.Join(bad, " "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ports(from, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = uint16(from + i)
	}
	return out
}

func TestFabric(t *testing.T) {
	f := New(t, Config{Spines: 2, Leaves: 2, HostsPerLeaf: 1})
	h1, h2 := f.Host("host1"), f.Host("host2")
	s1, s2 := f.Router("spine1"), f.Router("spine2")
	// One destination port for probes and flows: the 5-tuple decides the path.
	const dport = 50000
	sink1 := newSink(t, f, "host1", dport)
	sink2 := newSink(t, f, "host2", dport)

	sports := ports(40000, 24)
	// Which spine each flow takes, both ways, before any fault.
	fwd := map[uint16]netip.Addr{}
	rev := map[uint16]netip.Addr{}
	for _, sp := range sports {
		fwd[sp] = spineOf(t, f, "host1", h2.Addr, sp, dport)
		rev[sp] = spineOf(t, f, "host2", h1.Addr, sp, dport)
	}

	t.Run("ecmp", func(t *testing.T) {
		seen := map[netip.Addr]int{}
		for _, sp := range sports {
			seen[fwd[sp]]++
		}
		if seen[s1.Loopback] == 0 || seen[s2.Loopback] == 0 || len(seen) != 2 {
			t.Fatalf("source ports 40000-40023 took spines %v, want both %s and %s", seen, s1.Loopback, s2.Loopback)
		}
		for rep := 0; rep < 3; rep++ {
			for _, sp := range sports[:8] {
				if got := spineOf(t, f, "host1", h2.Addr, sp, dport); got != fwd[sp] {
					t.Fatalf("sport %d: spine %s, earlier %s: ECMP not stable per 5-tuple", sp, got, fwd[sp])
				}
			}
		}
	})

	t.Run("loopback-sources", func(t *testing.T) {
		for ttl, want := range map[int]netip.Addr{1: f.Router("leaf1").Loopback, 3: f.Router("leaf2").Loopback, 4: h2.Addr} {
			got, err := f.ProbeHop("host1", h2.Addr, 40100, 33434, ttl, probeTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("ttl %d answered by %s, want %s", ttl, got, want)
			}
		}
	})

	t.Run("traceroute-matches-ground-truth", func(t *testing.T) {
		var paths [][]netip.Addr
		for _, p := range f.GroundTruth().Pairs {
			if p.Src == "host1" && p.Dst == "host2" {
				paths = p.Paths
			}
		}
		for _, sp := range []string{"41000", "41001", "41002", "41003"} {
			out, err := f.Exec("host1", "traceroute", "-n", "-U", "-p", "33434", "--sport="+sp, "-q", "1", "-w", "2", h2.Addr.String())
			if err != nil {
				t.Fatal(err)
			}
			hops := parseTraceroute(t, string(out))
			if !slices.ContainsFunc(paths, func(p []netip.Addr) bool { return slices.Equal(p, hops) }) {
				t.Fatalf("traceroute --sport=%s saw %v, not one of the ground-truth paths %v\n%s", sp, hops, paths, out)
			}
		}
	})

	t.Run("loss-one-direction", func(t *testing.T) {
		l := f.LinkBetween("leaf1", "spine1")
		sink1.reset()
		sink2.reset()
		if err := f.SetLoss(l, "leaf1", 100); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.ClearFaults(l) })
		sendFlows(t, f, "host1", h2.Addr, dport, sports, 10)
		sendFlows(t, f, "host2", h1.Addr, dport, sports, 10)
		// host1→host2 through spine1 crosses leaf1→spine1: all lost. Others,
		// and every reverse flow (spine1→leaf1 is the healthy direction), pass.
		waitCounts(t, sink2, sports, func(sp uint16, got int) bool {
			if fwd[sp] == s1.Loopback {
				return got == 0
			}
			return got == 10
		}, "host1→host2 with leaf1→spine1 at 100% loss")
		waitCounts(t, sink1, sports, func(sp uint16, got int) bool { return got == 10 }, "host2→host1 with leaf1→spine1 at 100% loss")

		if err := f.ClearFaults(l); err != nil {
			t.Fatal(err)
		}
		sink2.reset()
		sendFlows(t, f, "host1", h2.Addr, dport, sports, 10)
		waitCounts(t, sink2, sports, func(sp uint16, got int) bool { return got == 10 }, "host1→host2 after ClearFaults")
	})

	t.Run("loss-before-the-receiver", func(t *testing.T) {
		// leaf1→host1 at 100%: host1's interface receives nothing, so no
		// hook on the host (TC ingress, the eBPF reflector) can see or
		// answer the dropped packets.
		l := f.LinkBetween("leaf1", "host1")
		end := l.B
		if l.A.Node == "host1" {
			end = l.A
		}
		rx := func() int {
			out, err := f.Exec(end.NS, "cat", "/sys/class/net/"+end.Ifname+"/statistics/rx_packets")
			if err != nil {
				t.Fatal(err)
			}
			n, err := strconv.Atoi(strings.TrimSpace(string(out)))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if err := f.SetLoss(l, "leaf1", 100); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.ClearFaults(l) })
		sink1.reset()
		sink2.reset()
		before := rx()
		sendFlows(t, f, "host2", h1.Addr, dport, sports[:4], 25)
		// The flows pass leaf1's egress (or are dropped there) at once;
		// after a round of pings through the healthy reverse they are done.
		sendFlows(t, f, "host1", h2.Addr, dport, sports[:1], 1)
		waitCounts(t, sink2, sports[:1], func(_ uint16, got int) bool { return got >= 1 }, "host1→host2 marker")
		if got := rx() - before; got > 5 {
			t.Errorf("host1 received %d packets while leaf1→host1 dropped everything (want ≤ 5: ARP only)", got)
		}
		sink1.mu.Lock()
		n := 0
		for _, c := range sink1.n {
			n += c
		}
		sink1.mu.Unlock()
		if n != 0 {
			t.Errorf("host1's socket got %d datagrams through a 100%% loss", n)
		}
	})

	t.Run("partial-loss", func(t *testing.T) {
		l := f.LinkBetween("host1", "leaf1")
		sink2.reset()
		if err := f.SetLoss(l, "host1", 30); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.ClearFaults(l) })
		one := []uint16{40200}
		const n = 1000
		sendFlows(t, f, "host1", h2.Addr, dport, one, n)
		// Binomial(1000, 0.7): mean 700, sd 14.5; ±6 sd.
		waitCounts(t, sink2, one, func(_ uint16, got int) bool { return got >= 613 && got <= 787 }, "30% loss")
	})

	t.Run("link-down", func(t *testing.T) {
		l := f.LinkBetween("leaf1", "spine1")
		sink2.reset()
		if err := f.SetDown(l, true); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.ClearFaults(l) })
		// leaf1 loses the next hop: every host1→host2 flow now takes spine2.
		for _, sp := range sports[:8] {
			if got := spineOf(t, f, "host1", h2.Addr, sp, dport); got != s2.Loopback {
				t.Fatalf("link down: sport %d via %s, want %s", sp, got, s2.Loopback)
			}
		}
		sendFlows(t, f, "host1", h2.Addr, dport, sports, 5)
		waitCounts(t, sink2, sports, func(_ uint16, got int) bool { return got == 5 }, "host1→host2 with leaf1-spine1 down")
		if err := f.SetDown(l, false); err != nil {
			t.Fatal(err)
		}
		for _, sp := range sports {
			if got := spineOf(t, f, "host1", h2.Addr, sp, dport); got != fwd[sp] {
				t.Fatalf("link up again: sport %d via %s, before %s", sp, got, fwd[sp])
			}
		}
	})
}

// parseTraceroute reads the hop addresses from `traceroute -n -q 1`.
func parseTraceroute(t *testing.T, out string) []netip.Addr {
	t.Helper()
	var hops []netip.Addr
	for _, line := range strings.Split(out, "\n")[1:] {
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fs[1])
		if err != nil {
			t.Fatalf("traceroute hop line %q: %v", line, err)
		}
		hops = append(hops, a)
	}
	return hops
}

func TestTeardown(t *testing.T) {
	RequireRoot(t)
	cfg := Config{Prefix: UniquePrefix(t), Spines: 1, Leaves: 2, HostsPerLeaf: 1}
	f, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Destroy(cfg.Prefix) })
	left, err := LeftoverNamespaces(cfg.Prefix)
	if err != nil || len(left) != 5 {
		t.Fatalf("after build: namespaces %v (err %v), want 5", left, err)
	}
	cmd, err := f.Start("host1", "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if cmd.ProcessState == nil {
		t.Error("Close did not wait for the started process")
	}
	if left, err := LeftoverNamespaces(cfg.Prefix); err != nil || len(left) != 0 {
		t.Fatalf("after close: namespaces %v (err %v)", left, err)
	}
	if _, err := Build(Config{Prefix: cfg.Prefix, Spines: 1, Leaves: 1, HostsPerLeaf: 1}); err != nil {
		t.Fatalf("rebuild with the same prefix after close: %v", err)
	}
}

func TestReapStale(t *testing.T) {
	RequireRoot(t)
	cfg := Config{Prefix: UniquePrefix(t), Spines: 1, Leaves: 1, HostsPerLeaf: 1}
	if _, err := Build(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Destroy(cfg.Prefix); forgetOwner(cfg.Prefix) })
	// A finished process's PID stands for a test binary that died.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ownerFile(cfg.Prefix), []byte(fmt.Sprint(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	reaped, err := ReapStale()
	if err != nil || !slices.Contains(reaped, cfg.Prefix) {
		t.Fatalf("reaped %v (err %v), want %s", reaped, err, cfg.Prefix)
	}
	if left, _ := LeftoverNamespaces(cfg.Prefix); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}
