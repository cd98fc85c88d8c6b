package probe

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// labPair is a 2-spine, 2-leaf fabric with one host per leaf and an engine
// on each host.
type labPair struct {
	f      *lab.Fabric
	h1, h2 lab.Host
	a, b   *Engine
}

func newLabPair(t testing.TB, mod func(c *Config)) *labPair {
	t.Helper()
	f := lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 2, Leaves: 2, HostsPerLeaf: 1})
	lp := &labPair{f: f, h1: f.Host("host1"), h2: f.Host("host2")}
	mk := func(h lab.Host) *Engine {
		t.Helper()
		c := DefaultConfig()
		c.LocalAddr = h.Addr
		c.Timeout = 500 * time.Millisecond
		c.LossResolveWindow = 2 * time.Second
		c.ResultBuffer = 1 << 16
		c.Timestamps = "user"
		if mod != nil {
			mod(&c)
		}
		var e *Engine
		if err := f.Do(h.NS, func() (err error) { e, err = New(c); return err }); err != nil {
			t.Fatalf("engine on %s: %v", h.Name, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		})
		return e
	}
	lp.a, lp.b = mk(lp.h1), mk(lp.h2)
	return lp
}

// pingMany sends n pings from a to b spread over the source ports with the
// given spacing and returns all n results.
// pingMany sends n pings and returns their results: one per ping, plus
// the Resolves results that give a loss reported unknown its direction,
// as far as they came before the last ping's result. Results of earlier
// pings (a resolution of the last call's tail) are left out.
func (lp *labPair) pingMany(t testing.TB, n int, spacing time.Duration) []Result {
	t.Helper()
	ports := int(lp.a.cfg.SrcPortEnd-lp.a.cfg.SrcPortStart) + 1
	tick := time.NewTicker(spacing)
	defer tick.Stop()
	type flowSeq struct {
		port uint16
		seq  uint64
	}
	ours := make(map[flowSeq]bool, n)
	var out []Result
	got := 0
	take := func(r Result) {
		if !ours[flowSeq{r.SrcPort, r.Seq}] {
			return
		}
		out = append(out, r)
		if !r.Resolves {
			got++
		}
	}
	drain := func() {
		for {
			select {
			case r := <-lp.a.Results():
				take(r)
			default:
				return
			}
		}
	}
	for i := range n {
		port := lp.a.cfg.SrcPortStart + uint16(i%ports)
		seq, err := lp.a.Ping(lp.h2.Addr, port)
		if err != nil {
			t.Logf("ping %d: %v", i, err)
		}
		ours[flowSeq{port, seq}] = true
		drain()
		<-tick.C
	}
	deadline := time.After(lp.a.cfg.Timeout + 5*time.Second)
	for got < n {
		select {
		case r := <-lp.a.Results():
			take(r)
		case <-deadline:
			t.Fatalf("got %d of %d results", got, n)
		}
	}
	return out
}

// finalDirs is the direction of every lost ping of rs, a later Resolves
// result replacing the unknown one reported at the timeout.
func finalDirs(rs []Result) map[graph.LossDir]int {
	type flowSeq struct {
		port uint16
		seq  uint64
	}
	dir := map[flowSeq]graph.LossDir{}
	for _, r := range rs {
		if r.Lost {
			dir[flowSeq{r.SrcPort, r.Seq}] = r.Dir
		}
	}
	count := map[graph.LossDir]int{}
	for _, d := range dir {
		count[d]++
	}
	return count
}

func rttP50(t testing.TB, rs []Result) time.Duration {
	t.Helper()
	var v []time.Duration
	for _, r := range rs {
		if !r.Lost {
			v = append(v, r.RTT)
		}
	}
	if len(v) == 0 {
		t.Fatal("no samples")
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func TestLabTraceGroundTruth(t *testing.T) {
	lp := newLabPair(t, nil)
	truth := lp.truth(t)
	c := startCapture(t, lp.f, lp.h1)
	var errs []time.Duration
	seen := map[string]bool{}
	for port := lp.a.cfg.SrcPortStart; port <= lp.a.cfg.SrcPortEnd; port++ {
		res := lp.traceTruth(t, port, truth)
		errs = append(errs, hopRTTErrors(c, lp.h2.Addr, port, res.Hops)...)
		var got []netip.Addr
		for _, h := range res.Hops {
			got = append(got, h.Addr)
		}
		seen[fmtAddrs(got)] = true
	}
	if len(truth) > 1 && len(seen) < 2 {
		t.Errorf("11 source ports all took one path of %d: ECMP not exercised", len(truth))
	}
	// User stamps: informational (TestLabTraceEBPF holds the kernel's to
	// the capture), but a hop RTT off by more than the probe timeout would
	// be a mismatched answer.
	slices.Sort(errs)
	if len(errs) < 11 {
		t.Fatalf("capture matched %d router hops", len(errs))
	}
	t.Logf("user: |hop RTT − capture| p50 %v p90 %v p99 %v max %v (n=%d)",
		pct(errs, .5), pct(errs, .9), pct(errs, .99), errs[len(errs)-1], len(errs))
	if errs[len(errs)-1] > lp.a.cfg.TraceTimeout {
		t.Errorf("a hop RTT is %v off the capture", errs[len(errs)-1])
	}
}

// truth is the lab's routes from host1 to host2.
func (lp *labPair) truth(t testing.TB) [][]netip.Addr {
	t.Helper()
	for _, ps := range lp.f.GroundTruth().Pairs {
		if ps.Src == "host1" && ps.Dst == "host2" {
			return ps.Paths
		}
	}
	t.Fatal("no ground truth for host1→host2")
	return nil
}

// traceTruth traces host1→host2 from port on host1's engine and fails t
// unless the trace reached host2 along one of truth's routes.
func (lp *labPair) traceTruth(t testing.TB, port uint16, truth [][]netip.Addr) TraceResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	res, err := lp.a.Trace(ctx, lp.h2.Addr, port, 16, 3)
	cancel()
	if err != nil {
		t.Fatalf("port %d: %v", port, err)
	}
	var got []netip.Addr
	for _, h := range res.Hops {
		got = append(got, h.Addr)
	}
	if !res.Reached || !slices.ContainsFunc(truth, func(p []netip.Addr) bool { return slices.Equal(p, got) }) {
		t.Fatalf("port %d: trace %v (reached %v) is none of the ground-truth paths %v", port, got, res.Reached, truth)
	}
	return res
}

func fmtAddrs(a []netip.Addr) string {
	s := ""
	for _, x := range a {
		s += x.String() + " "
	}
	return s
}

// binomialBounds returns a generous (6σ) acceptance interval for a count of
// successes in n trials of probability p.
func binomialBounds(n int, p float64) (lo, hi int) {
	mu := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	return int(math.Max(0, mu-6*sd)), int(mu + 6*sd)
}

func TestLabLossDirection(t *testing.T) {
	lp := newLabPair(t, nil)
	link := lp.f.LinkBetween("host2", "leaf2")
	const n = 1000
	for _, tc := range []struct {
		name string
		from string // direction: traffic leaving this node
		want graph.LossDir
	}{
		{"forward", "leaf2", graph.LossForward},
		{"reverse", "host2", graph.LossReverse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := lp.f.SetLoss(link, tc.from, 10); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lp.f.ClearFaults(link) })
			rs := lp.pingMany(t, n, 2*time.Millisecond)
			count := finalDirs(rs)
			lo, hi := binomialBounds(n, 0.10)
			other := graph.LossReverse
			if tc.want == graph.LossReverse {
				other = graph.LossForward
			}
			t.Logf("lost: forward %d, reverse %d, unknown %d of %d", count[graph.LossForward], count[graph.LossReverse], count[graph.LossUnknown], n)
			if got := count[tc.want]; got < lo || got > hi {
				t.Errorf("%s loss %d of %d, want %d..%d", tc.name, got, n, lo, hi)
			}
			// A loss in the other direction is a misattribution; a few
			// unknowns happen at the tail of each flow (no later ack).
			if count[other] > 3 || count[graph.LossUnknown] > 20 {
				t.Errorf("misattributed: %v", count)
			}
		})
	}
}

func TestLabDelay(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  Source
		from time.Duration
		tol  time.Duration
	}{
		// user stamps carry the prober's wake-up latency. Pinging a 50 µs
		// path the vCPU is still awake when the ack comes; 2 ms later it
		// has halted, and waking it takes 100-300 µs on this VM (under
		// load, when it never halts, the rise measured +81-96 µs off):
		// from no delay, user gets ± 1 ms (TestLabDelayGapUser for ± 200 µs).
		{"user", SourceUser, 0, time.Millisecond},
		{"kernel", SourceKernel, 0, 200 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkDelayRise(t, newLabPair(t, func(c *Config) { c.Timestamps = string(tc.src) }), tc.from, tc.tol)
		})
	}
}

// User stamps hold ± 200 µs when both sides of the comparison wake a halted
// vCPU and see the same load: leaf1's uplink to spine1 delays by 1 ms and
// its uplink to spine2 by 3 ms at the same time, and the flows through
// spine2 have an RTT p50 higher by what the wire added. (Measured one after
// the other, the two p50s saw different load from other tests and drifted
// by up to 206 µs.)
func TestLabDelayGapUser(t *testing.T) {
	lp := newLabPair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	spine := map[uint16]string{} // source port → the spine its flow crosses
	for port := lp.a.cfg.SrcPortStart; port <= lp.a.cfg.SrcPortEnd; port++ {
		res, err := lp.a.ProbeTTLs(ctx, lp.h2.Addr, port, []int{2})
		if err != nil || len(res.Answers) != 1 {
			t.Fatalf("port %d: ttl 2: %+v %v", port, res, err)
		}
		for _, s := range []string{"spine1", "spine2"} {
			if res.Answers[0].Hop.Addr == lp.f.Router(s).Loopback {
				spine[port] = s
			}
		}
	}
	delays := map[string]time.Duration{"spine1": time.Millisecond, "spine2": 3 * time.Millisecond}
	for s, d := range delays {
		l := lp.f.LinkBetween("leaf1", s)
		if err := lp.f.SetDelay(l, "leaf1", d); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lp.f.ClearFaults(l) })
	}
	by := map[string][]Result{}
	for _, r := range lp.pingMany(t, 600, time.Millisecond) {
		by[spine[r.SrcPort]] = append(by[spine[r.SrcPort]], r)
	}
	if len(by["spine1"]) < 100 || len(by["spine2"]) < 100 {
		t.Fatalf("flows per spine: %d through spine1, %d through spine2; want both ECMP paths", len(by["spine1"]), len(by["spine2"]))
	}
	late := func(s string) time.Duration { return lp.f.DelayStats(lp.f.LinkBetween("leaf1", s), "leaf1").LateP50 }
	p1, p2 := rttP50(t, by["spine1"]), rttP50(t, by["spine2"])
	gap, want := p2-p1, delays["spine2"]+late("spine2")-delays["spine1"]-late("spine1")
	t.Logf("user: p50 %v through spine1 (1 ms), %v through spine2 (3 ms): +%v; the wire got +%v", p1, p2, gap, want)
	if d := gap - want; d < -200*time.Microsecond || d > 200*time.Microsecond {
		t.Errorf("p50 gap %v, want %v ± 200µs", gap, want)
	}
}

// checkDelayRise delays the forward direction of both of leaf1's uplinks
// by from, then by from + 2 ms, and checks that lp's RTT p50 rises by what
// the wire got, ± tol.
func checkDelayRise(t *testing.T, lp *labPair, from, tol time.Duration) {
	t.Helper()
	// Both uplinks of leaf1, so that every ECMP path gets the delay.
	links := []lab.Link{lp.f.LinkBetween("leaf1", "spine1"), lp.f.LinkBetween("leaf1", "spine2")}
	// measure returns the RTT p50 with d on the links, and how late the
	// userspace delay element released frames (p50): real extra delay.
	measure := func(d time.Duration) (p50, late time.Duration) {
		for _, l := range links {
			if err := lp.f.ClearFaults(l); err != nil {
				t.Fatal(err)
			}
			if d > 0 {
				if err := lp.f.SetDelay(l, "leaf1", d); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { lp.f.ClearFaults(l) })
			}
		}
		p50 = rttP50(t, lp.pingMany(t, 300, time.Millisecond))
		if d > 0 {
			late = (lp.f.DelayStats(links[0], "leaf1").LateP50 + lp.f.DelayStats(links[1], "leaf1").LateP50) / 2
		}
		return p50, late
	}
	base, late0 := measure(from)
	delayed, late1 := measure(from + 2*time.Millisecond)
	rise, want := delayed-base, 2*time.Millisecond+late1-late0
	t.Logf("%s: p50 %v → %v (+%v) going from %v to %v; the wire got +%v (delay element late p50 %v → %v)",
		lp.a.Source(), base, delayed, rise, from, from+2*time.Millisecond, want, late0, late1)
	if d := rise - want; d < -tol || d > tol {
		t.Errorf("p50 rose by %v, want %v ± %v", rise, want, tol)
	}
}

// A spoofed ack (wrong HMAC) and random garbage to the ping port change no
// sample.
func TestLabSpoofAndGarbage(t *testing.T) {
	key := []byte("cluster-key")
	lp := newLabPair(t, func(c *Config) { c.Key = key })
	// A third party inside host2's namespace fires junk at host1's ping port
	// from host2's address and the flow's source port range while pings run.
	stop := make(chan struct{})
	fired := make(chan int)
	go func() {
		n := 0
		_ = lp.f.Do(lp.h2.NS, func() error {
			c, _, err := listenUDP(netip.AddrPortFrom(lp.h2.Addr, 0), false)
			if err != nil {
				return err
			}
			defer c.Close()
			dst := netip.AddrPortFrom(lp.h1.Addr, lp.a.cfg.PingPort)
			wrong := NewCodec([]byte("not-the-key"))
			for seq := uint64(1); ; seq++ {
				select {
				case <-stop:
					return nil
				default:
				}
				p := Packet{Type: TypeAck, SrcPort: lp.a.cfg.SrcPortStart, Epoch: lp.a.Epoch(), Seq: seq, T2: 1, T3: 2, RxCount: seq, AckCount: seq}
				c.WriteToUDPAddrPort(wrong.AppendEncode(nil, &p), dst)
				junk := make([]byte, 1+seq%200)
				for i := range junk {
					junk[i] = byte(seq * uint64(i+7))
				}
				c.WriteToUDPAddrPort(junk, dst)
				n += 2
				time.Sleep(time.Millisecond) // pacing the attacker, not synchronising
			}
		})
		fired <- n
	}()
	rs := lp.pingMany(t, 300, 2*time.Millisecond)
	close(stop)
	n := <-fired
	for _, r := range rs {
		if r.Lost || r.T2 == 1 {
			t.Fatalf("a spoofed packet changed a sample: %+v", r)
		}
	}
	if n == 0 {
		t.Fatal("attacker sent nothing")
	}
}

// A trace towards an address nobody has stops at the silent run (or at a
// router's destination unreachable) and is not reached; the hops it did see
// are a prefix of a real path.
func TestLabTraceUnreached(t *testing.T) {
	lp := newLabPair(t, func(c *Config) { c.TraceTimeout = 500 * time.Millisecond })
	ghost := netip.MustParseAddr("198.19.2.200") // host2's subnet, no host
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := lp.a.Trace(ctx, ghost, lp.a.cfg.SrcPortStart, 12, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trace to nobody: %+v", res)
	if res.Reached {
		t.Fatalf("reached a host that does not exist: %+v", res)
	}
	if len(res.Hops) < 3 || res.Hops[0].Addr != lp.f.Router("leaf1").Loopback {
		t.Fatalf("hops %+v: want leaf1, a spine, leaf2 first", res.Hops)
	}
	if res.ProbesSent > 12 {
		t.Fatalf("sent %d probes for maxTTL 12", res.ProbesSent)
	}
}
