package probe_test

import (
	"slices"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/probe"
)

// attachLoader loads the eBPF programs on host h's uplink and feeds e. It
// skips the test when this kernel or process does not allow eBPF.
func attachLoader(t testing.TB, lp *probe.LabPair, host string, reflect bool, feed func(probe.Stamp)) *loader.Loader {
	t.Helper()
	a, _ := lp.Engines()
	l := loadTC(t, lp.Fabric(), lp.Fabric().Host(host), a.PingPort(), reflect)
	runLoader(t, l, feed)
	return l
}

// With the eBPF time source and the in-kernel reflector: samples come from
// ebpf stamps, agree with the capture, and host2's agent never sees a ping.
func TestLabEBPF(t *testing.T) {
	lp := ebpfPair(t)
	_, b := lp.Engines()
	c := probe.StartCapture(t, lp.Fabric(), lp.Fabric().Host("host1"))
	rs := lp.PingMany(t, 300, 2*time.Millisecond)
	var ebpf, kref, lost int
	for _, r := range rs {
		if r.Lost {
			lost++
			continue
		}
		if r.Source == "ebpf" {
			ebpf++
		}
		if r.KernelReflected {
			kref++
		}
	}
	if lost > 0 || kref != len(rs) {
		t.Fatalf("lost %d, kernel-reflected %d of %d", lost, kref, len(rs))
	}
	if ebpf < len(rs)*95/100 {
		t.Errorf("only %d of %d samples from ebpf stamps", ebpf, len(rs))
	}
	if got := probe.UserspacePings(b); got != 0 {
		t.Errorf("host2's agent saw %v pings; the kernel reflector should answer all", got)
	}
	if n, bad := probe.ReflectMismatches(c, true); n < 290 || bad != "" {
		t.Errorf("kernel reflector bytes differ from the userspace reflector's (%d compared): %s", n, bad)
	}
	errs := probe.RTTErrors(c, rs)
	if len(errs) < 290 {
		t.Fatalf("capture matched %d", len(errs))
	}
	t.Logf("ebpf: |RTT − capture| p50 %v p90 %v p99 %v max %v (n=%d)",
		probe.Pct(errs, .5), probe.Pct(errs, .9), probe.Pct(errs, .99), errs[len(errs)-1], len(errs))
	if probe.Pct(errs, .5) > 20*time.Microsecond || errs[len(errs)-1] > 5*time.Millisecond {
		t.Errorf("ebpf RTT disagrees with the capture: p50 %v, max %v", probe.Pct(errs, .5), errs[len(errs)-1])
	}
}

// With 2 ms added on the way out, the ebpf source's RTT p50 rises by what
// the wire got, ± 200 µs, like the other sources (TestLabDelay).
func TestLabDelayEBPF(t *testing.T) {
	probe.CheckDelayRise(t, ebpfPair(t))
}

// With the eBPF time source, routers' answers to trace probes also come
// through the ring buffer, and every hop's RTT is kernel time at both ends:
// the probe at TC egress, the ICMP error or the peer's trace-ack on arrival.
// The routes are the ground truth's.
func TestLabTraceEBPF(t *testing.T) {
	lp := ebpfPair(t)
	a, _ := lp.Engines()
	truth := lp.Truth(t)
	c := probe.StartCapture(t, lp.Fabric(), lp.Fabric().Host("host1"))
	var errs []time.Duration
	lo, hi := a.SrcPorts()
	for port := lo; port <= hi; port++ {
		res := lp.TraceTruth(t, port, truth)
		errs = append(errs, probe.HopRTTErrors(c, lp.Fabric().Host("host2").Addr, port, res.Hops)...)
		if port == lo {
			t.Logf("port %d: hops %v", port, res.Hops)
		}
		if res.KernelStamped != len(res.Hops) {
			t.Errorf("port %d: %d of %d hops have RTTs from eBPF stamps", port, res.KernelStamped, len(res.Hops))
		}
		for ttl, h := range res.Hops {
			if h.RTT <= 0 || h.RTT > time.Second {
				t.Errorf("port %d ttl %d: RTT %v", port, ttl+1, h.RTT)
			}
		}
	}
	slices.Sort(errs)
	if len(errs) < 11 {
		t.Fatalf("capture matched %d router hops", len(errs))
	}
	t.Logf("ebpf: |hop RTT − capture| p50 %v p90 %v p99 %v max %v (n=%d)",
		probe.Pct(errs, .5), probe.Pct(errs, .9), probe.Pct(errs, .99), errs[len(errs)-1], len(errs))
	if probe.Pct(errs, .5) > 20*time.Microsecond {
		t.Errorf("ebpf hop RTTs disagree with the capture: p50 %v", probe.Pct(errs, .5))
	}
}

// ebpfPair is a lab pair on the ebpf time source: host1's programs stamp,
// host2's reflect in the kernel.
func ebpfPair(t *testing.T) *probe.LabPair {
	t.Helper()
	lp := probe.NewLabPair(t, func(c *probe.Config) {
		c.EBPF = true
		c.Timestamps = "ebpf"
		c.Reflect = false // the kernel reflects
	})
	a, b := lp.Engines()
	attachLoader(t, lp, "host1", false, a.HandleStamp)
	attachLoader(t, lp, "host2", true, b.HandleStamp)
	return lp
}
