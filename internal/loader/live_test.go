package loader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/probe"
)

// Real traffic through a lab fabric: host1 - leaf1 - spine1 - leaf2 - host2.
// Every namespace is the lab's and is deleted in t.Cleanup.

const (
	livePingPort = 33435
	liveSport    = 40001
	liveTrace    = 40002
	waitFor      = 15 * time.Second // generous: 2 shared cores under load
)

// stampLog collects what one loader's Run hands up.
type stampLog struct {
	mu sync.Mutex
	s  []probe.Stamp
}

func (sl *stampLog) add(s probe.Stamp) {
	sl.mu.Lock()
	sl.s = append(sl.s, s)
	sl.mu.Unlock()
}

// wait polls until pred matches a stamp or the deadline passes.
func (sl *stampLog) wait(t *testing.T, what string, pred func(probe.Stamp) bool) probe.Stamp {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		sl.mu.Lock()
		i := slices.IndexFunc(sl.s, pred)
		var last []probe.Stamp
		if i >= 0 {
			s := sl.s[i]
			sl.mu.Unlock()
			return s
		}
		last = append(last, sl.s[max(0, len(sl.s)-5):]...)
		sl.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no stamp for %s after %v; last stamps seen: %+v", what, waitFor, last)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// liveLoader loads and attaches in host's namespace, runs it until the test
// ends and closes it (Close is also called by tests that check detaching).
func liveLoader(t *testing.T, f *lab.Fabric, h lab.Host, cfg Config) (*Loader, *stampLog) {
	t.Helper()
	var l *Loader
	if err := f.Do(h.NS, func() error {
		var err error
		l, err = Load(cfg)
		return err
	}); err != nil {
		t.Fatalf("load in %s: %v", h.Name, err)
	}
	sl := &stampLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, sl.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l, sl
}

// udpIn opens a UDP socket in host's namespace.
func udpIn(t *testing.T, f *lab.Fabric, h lab.Host, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := f.Do(h.NS, func() error {
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	}); err != nil {
		t.Fatalf("socket %s in %s: %v", addr, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func liveFabric(t *testing.T) (*lab.Fabric, lab.Host, lab.Host) {
	t.Helper()
	lab.RequireRoot(t)
	f := lab.New(t, lab.Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	return f, f.Hosts[0], f.Hosts[1]
}

// progIDs are the kernel IDs of l's two programs.
func progIDs(t *testing.T, l *Loader) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{l.objs.DnmsIngress, l.objs.DnmsEgress} {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		ids = append(ids, id)
	}
	return ids
}

// attachedIDs lists the programs on ifname's tcx hooks and the BPF filters
// on its clsact hooks (with their priority) in host's namespace.
func attachedIDs(t *testing.T, f *lab.Fabric, h lab.Host) (tcx []ebpf.ProgramID, filters []string, clsact bool) {
	t.Helper()
	err := f.Do(h.NS, func() error {
		lnk, err := netlink.LinkByName(h.Ifname)
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: lnk.Attrs().Index, Attach: at})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				tcx = append(tcx, p.ID)
			}
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := netlink.FilterList(lnk, parent)
			if err != nil {
				continue // no clsact qdisc
			}
			for _, fl := range fs {
				filters = append(filters, fmt.Sprintf("%T prio %d", fl, fl.Attrs().Priority))
			}
		}
		qs, err := netlink.QdiscList(lnk)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Type() == "clsact" {
				clsact = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("query hooks in %s: %v", h.Name, err)
	}
	return tcx, filters, clsact
}

func encode(p probe.Packet) []byte { return probe.AppendEncode(nil, &p) }

// TestLiveReflectorAndStamps: pings from host1 are answered by host2's
// kernel (nobody reads host2's ping port), and host1's loader hands up TX
// and RX_ACK stamps that give a plausible RTT.
func TestLiveReflectorAndStamps(t *testing.T) {
	for _, mode := range []string{ModeTCX, ModeClsact} {
		t.Run(mode, func(t *testing.T) { testLive(t, mode) })
	}
}

func testLive(t *testing.T, mode string) {
	f, hA, hB := liveFabric(t)
	regB := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Ifaces = []string{hB.Ifname}
	cfg.Mode = mode
	cfg.Registerer = regB
	lB, stB := liveLoader(t, f, hB, cfg)
	cfg.Registerer = nil
	cfg.Ifaces = []string{hA.Ifname}
	lA, stA := liveLoader(t, f, hA, cfg)
	if got := lB.Status().Mode; got != mode {
		t.Fatalf("mode %q, want %q", got, mode)
	}
	idsA, idsB := progIDs(t, lA), progIDs(t, lB)

	// host2 binds the ping port: if the kernel did not answer, the pings
	// would land here (and a userspace reflector would be woken).
	sinkB := udpIn(t, f, hB, fmt.Sprintf("%s:%d", hB.Addr, livePingPort))
	sendA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, liveSport))
	recvA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, livePingPort))
	dst := &net.UDPAddr{IP: hB.Addr.AsSlice(), Port: livePingPort}

	const n = 20
	epoch := uint32(time.Now().UnixNano())
	var rtts []time.Duration
	buf := make([]byte, 2048)
	for seq := uint64(1); seq <= n; seq++ {
		ping := probe.Packet{Type: probe.TypePing, SrcPort: liveSport, Epoch: epoch, Seq: seq, T1: monotonicNow()}
		if _, err := sendA.WriteTo(encode(ping), dst); err != nil {
			t.Fatalf("send ping %d: %v", seq, err)
		}
		recvA.SetReadDeadline(time.Now().Add(waitFor))
		nr, from, err := recvA.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("ack %d: %v (reflector status %+v)", seq, err, lB.Status())
		}
		if from.Port != liveSport || !from.IP.Equal(hB.Addr.AsSlice()) {
			t.Errorf("ack %d from %v, want %v:%d (mirrored)", seq, from, hB.Addr, liveSport)
		}
		var ack probe.Packet
		if r := probe.Decode(buf[:nr], &ack); r != probe.RejectNone {
			t.Fatalf("ack %d rejected: %v", seq, r)
		}
		if ack.Type != probe.TypeAck || ack.Flags&probe.FlagKernel == 0 || ack.Seq != seq || ack.T1 != ping.T1 ||
			ack.Epoch != epoch || ack.RxCount != seq || ack.AckCount != seq || ack.T2 == 0 || ack.T3 < ack.T2 {
			t.Fatalf("ack %d: %+v", seq, ack)
		}
		match := func(kind probe.StampKind) func(probe.Stamp) bool {
			return func(s probe.Stamp) bool {
				return s.Kind == kind && s.Seq == seq && s.Local == netip.AddrPortFrom(hA.Addr, liveSport) && s.Remote == hB.Addr
			}
		}
		tx := stA.wait(t, fmt.Sprintf("TX seq %d", seq), match(probe.StampTx))
		rx := stA.wait(t, fmt.Sprintf("RX_ACK seq %d", seq), match(probe.StampRxAck))
		if tx.Time < ping.T1 || rx.Time < tx.Time {
			t.Fatalf("seq %d: t1 %d tx %d rx %d not in order", seq, ping.T1, tx.Time, rx.Time)
		}
		rtt := time.Duration((rx.Time - tx.Time) - (ack.T3 - ack.T2))
		if rtt <= 0 || rtt > time.Second {
			t.Errorf("seq %d: eBPF RTT %v implausible", seq, rtt)
		}
		rtts = append(rtts, rtt)
	}
	slices.Sort(rtts)
	t.Logf("%s: eBPF RTT over %d pings through 3 routers: min %v p50 %v max %v", mode, n, rtts[0], rtts[n/2], rtts[n-1])

	// Nothing reached host2's socket: userspace was never woken.
	sinkB.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if nr, from, err := sinkB.ReadFromUDP(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("host2's ping port received %d bytes from %v (err %v): the kernel did not reflect", nr, from, err)
	}
	if st := lB.Status(); st.Reflected != n || st.ReflectErrors != 0 || st.ReserveFailures != 0 {
		t.Errorf("host2 status %+v, want %d reflected", st, n)
	}
	stB.mu.Lock()
	if len(stB.s) != 0 {
		t.Errorf("host2's loader handed up %d stamps for reflected pings (reflect events are off)", len(stB.s))
	}
	stB.mu.Unlock()

	// Metrics.
	mfs, err := regB.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += "," + lp.GetName() + "=" + lp.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for _, k := range []string{
		"dnms_ebpf_attached,hook=ingress,iface=" + hB.Ifname + ",mode=" + mode,
		"dnms_ebpf_attached,hook=egress,iface=" + hB.Ifname + ",mode=" + mode,
	} {
		if got[k] != 1 {
			t.Errorf("metric %s = %v, want 1 (have %v)", k, got[k], got)
		}
	}
	if got["dnms_ebpf_reflected_total"] != n {
		t.Errorf("dnms_ebpf_reflected_total = %v, want %d", got["dnms_ebpf_reflected_total"], n)
	}

	// Close detaches everything and leaves no tcx link or clsact filter.
	for _, c := range []struct {
		h   lab.Host
		l   *Loader
		ids []ebpf.ProgramID
	}{{hA, lA, idsA}, {hB, lB, idsB}} {
		tcx, filters, _ := attachedIDs(t, f, c.h)
		if mode == ModeTCX && (!slices.Contains(tcx, c.ids[0]) || !slices.Contains(tcx, c.ids[1])) {
			t.Errorf("%s before Close: tcx programs %v, want ours %v", c.h.Name, tcx, c.ids)
		}
		if mode == ModeClsact && len(filters) != 2 {
			t.Errorf("%s before Close: filters %v, want 2", c.h.Name, filters)
		}
		if err := c.l.Close(); err != nil {
			t.Errorf("close %s: %v", c.h.Name, err)
		}
		tcx, filters, clsact := attachedIDs(t, f, c.h)
		if len(tcx) != 0 || len(filters) != 0 || clsact {
			t.Errorf("%s after Close: tcx programs %v, filters %v, clsact qdisc %v", c.h.Name, tcx, filters, clsact)
		}
	}
	if mfs, err := regB.Gather(); err != nil || len(mfs) != 0 {
		t.Errorf("after Close the registry still has %d metric families (err %v)", len(mfs), err)
	}
}

// TestLiveTraceICMP: Paris trace probes from host1 with TTL 1..3 expire at
// leaf1, spine1 and leaf2, whose ICMP time-exceeded errors host1's ingress
// stamps with the router, TTL and sequence; TTL 4 reaches host2, whose kernel
// answers with a trace-ack.
func TestLiveTraceICMP(t *testing.T) {
	f, hA, hB := liveFabric(t)
	cfg := DefaultConfig()
	cfg.Ifaces = []string{hB.Ifname}
	liveLoader(t, f, hB, cfg)
	cfg.Ifaces = []string{hA.Ifname}
	_, stA := liveLoader(t, f, hA, cfg)

	var spine netip.Addr
	for _, r := range f.Routers {
		if r.Role == lab.RoleSpine {
			spine = r.Loopback
		}
	}
	hops := []netip.Addr{f.Router(hA.Leaf).Loopback, spine, f.Router(hB.Leaf).Loopback}

	sendA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, liveTrace))
	recvA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, livePingPort))
	pc := ipv4.NewPacketConn(sendA)
	dst := &net.UDPAddr{IP: hB.Addr.AsSlice(), Port: livePingPort}
	local := netip.AddrPortFrom(hA.Addr, liveTrace)
	epoch := uint32(time.Now().UnixNano())
	for ttl := 1; ttl <= len(hops)+1; ttl++ {
		seq := uint64(100 + ttl)
		p := probe.Packet{Type: probe.TypeTrace, TTL: uint8(ttl), PadLen: uint16(ttl), SrcPort: liveTrace,
			Epoch: epoch, Seq: seq, T1: monotonicNow()}
		if err := pc.SetTTL(ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := sendA.WriteTo(encode(p), dst); err != nil {
			t.Fatalf("send ttl %d: %v", ttl, err)
		}
		tx := stA.wait(t, fmt.Sprintf("TX ttl %d", ttl), func(s probe.Stamp) bool {
			return s.Kind == probe.StampTx && s.Seq == seq
		})
		if tx.TTL != uint8(ttl) || tx.Type != uint8(probe.TypeTrace) || tx.Local != local || tx.Remote != hB.Addr {
			t.Errorf("TX stamp %+v", tx)
		}
		if ttl <= len(hops) {
			s := stA.wait(t, fmt.Sprintf("RX_ICMP ttl %d", ttl), func(s probe.Stamp) bool {
				return s.Kind == probe.StampRxICMP && s.TTL == uint8(ttl)
			})
			want := probe.Stamp{Kind: probe.StampRxICMP, Local: local, Remote: hB.Addr, Router: hops[ttl-1],
				ICMPType: 11, Type: uint8(probe.TypeTrace), Seq: seq, Epoch: epoch, TTL: uint8(ttl), Time: s.Time, Hook: s.Hook}
			if s != want {
				t.Errorf("ttl %d: stamp\n got %+v\nwant %+v", ttl, s, want)
			}
			if s.Hook != 0 && s.Hook < s.Time {
				t.Errorf("ttl %d: arrival stamp %d after the hook's %d", ttl, s.Time, s.Hook)
			}
			if s.Time <= tx.Time || s.Time-tx.Time > int64(time.Second) {
				t.Errorf("ttl %d: ICMP %d ns after TX", ttl, s.Time-tx.Time)
			}
			continue
		}
		rx := stA.wait(t, "trace-ack", func(s probe.Stamp) bool {
			return s.Kind == probe.StampRxAck && s.Seq == seq
		})
		if rx.Type != uint8(probe.TypeTraceAck) || rx.TTL != uint8(ttl) || rx.Local != local {
			t.Errorf("trace-ack stamp %+v", rx)
		}
		buf := make([]byte, 2048)
		recvA.SetReadDeadline(time.Now().Add(waitFor))
		n, _, err := recvA.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("trace-ack: %v", err)
		}
		var ack probe.Packet
		if r := probe.Decode(buf[:n], &ack); r != probe.RejectNone || ack.Type != probe.TypeTraceAck ||
			ack.PadLen != uint16(ttl) || ack.TTL != uint8(ttl) || ack.Seq != seq {
			t.Errorf("trace-ack %+v (reject %v)", ack, r)
		}
	}
}

// TestTCXFeature: auto mode must pick tcx on a kernel that has it. It skips
// only if a direct tcx attach says the kernel lacks the feature.
func TestTCXFeature(t *testing.T) {
	f, hA, _ := liveFabric(t)
	cfg := DefaultConfig()
	cfg.Ifaces = []string{hA.Ifname}
	l, _ := liveLoader(t, f, hA, cfg)
	if l.Status().Mode == ModeTCX {
		return
	}
	// Auto fell back: is tcx really missing?
	err := f.Do(hA.NS, func() error {
		lnk, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		lk, err := link.AttachTCX(link.TCXOptions{Interface: lnk.Attrs().Index, Program: l.objs.DnmsIngress,
			Attach: ebpf.AttachTCXIngress})
		if err == nil {
			lk.Close()
		}
		return err
	})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel has no tcx (%v); clsact fallback in use", err)
	}
	t.Fatalf("auto mode chose %q although tcx attach works here (direct attach err %v)", l.Status().Mode, err)
}

// TestClsactKeepsForeignQdisc: in clsact mode, a clsact qdisc that was there
// before stays after Close; only our filters go.
func TestClsactKeepsForeignQdisc(t *testing.T) {
	f, hA, _ := liveFabric(t)
	if out, err := f.Exec(hA.NS, "tc", "qdisc", "add", "dev", hA.Ifname, "clsact"); err != nil {
		t.Fatalf("tc qdisc add: %v: %s", err, out)
	}
	cfg := DefaultConfig()
	cfg.Ifaces = []string{hA.Ifname}
	cfg.Mode = ModeClsact
	l, _ := liveLoader(t, f, hA, cfg)
	if _, filters, _ := attachedIDs(t, f, hA); len(filters) != 2 {
		t.Fatalf("filters with ours attached: %v, want 2", filters)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, filters, clsact := attachedIDs(t, f, hA)
	if !clsact || len(filters) != 0 {
		t.Errorf("after Close: clsact %v, filters %v; want the foreign qdisc, empty", clsact, filters)
	}
}

// With a poll interval far longer than the test, only Kick can bring the
// stamps of a ping and its ack up: each Kick drains the ring at once.
func TestLiveKick(t *testing.T) {
	f, hA, hB := liveFabric(t)
	cfg := DefaultConfig()
	cfg.Ifaces = []string{hB.Ifname}
	liveLoader(t, f, hB, cfg) // the kernel reflector
	cfg.Ifaces, cfg.Reflect, cfg.Poll = []string{hA.Ifname}, false, time.Hour
	lA, stA := liveLoader(t, f, hA, cfg)

	sendA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, liveSport))
	recvA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, livePingPort))
	dst := &net.UDPAddr{IP: hB.Addr.AsSlice(), Port: livePingPort}
	epoch := uint32(time.Now().UnixNano())
	buf := make([]byte, 2048)
	for seq := uint64(1); seq <= 3; seq++ {
		ping := probe.Packet{Type: probe.TypePing, SrcPort: liveSport, Epoch: epoch, Seq: seq, T1: monotonicNow()}
		if _, err := sendA.WriteTo(encode(ping), dst); err != nil {
			t.Fatal(err)
		}
		recvA.SetReadDeadline(time.Now().Add(waitFor))
		if _, _, err := recvA.ReadFromUDP(buf); err != nil {
			t.Fatalf("ack %d: %v", seq, err)
		}
		lA.Kick()
		stA.wait(t, fmt.Sprintf("RX_ACK %d after Kick", seq), func(s probe.Stamp) bool {
			return s.Kind == probe.StampRxAck && s.Seq == seq
		})
	}
}
