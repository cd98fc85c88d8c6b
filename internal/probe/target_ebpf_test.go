package probe

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type fakeStamper struct {
	kicks   int
	watched map[[2]uint16]bool
}

func (f *fakeStamper) WatchTarget(proto uint8, port uint16) error {
	f.watched[[2]uint16{uint16(proto), port}] = true
	return nil
}

func (f *fakeStamper) UnwatchTarget(proto uint8, port uint16) error {
	delete(f.watched, [2]uint16{uint16(proto), port})
	return nil
}
func (f *fakeStamper) Kick() { f.kicks++ }

// Two flows sharing a port (to two targets) stay watched until both close;
// ICMPv6 flows are watched under their own protocol.
func TestTargetEBPFWatchShared(t *testing.T) {
	st := &fakeStamper{watched: map[[2]uint16]bool{}}
	p, err := NewTargetProber(TargetConfig{EBPF: st})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.3.1")
	if !p.watch(KindTCP, a, 40000) || !p.watch(KindTCP, b, 40000) || !p.watch(KindICMP, netip.MustParseAddr("fd00::1"), 7) {
		t.Fatal("watch refused")
	}
	p.unwatch(KindTCP, a, 40000)
	if !st.watched[[2]uint16{unix.IPPROTO_TCP, 40000}] {
		t.Fatal("closing one of two flows on a port stopped the other's stamps")
	}
	p.unwatch(KindTCP, b, 40000)
	if st.watched[[2]uint16{unix.IPPROTO_TCP, 40000}] {
		t.Fatal("the port stays watched after its last flow closed")
	}
	if !st.watched[[2]uint16{unix.IPPROTO_ICMPV6, 7}] {
		t.Fatalf("ICMPv6 flow watched as %v", st.watched)
	}
}

// The eBPF join: a probe's stamps are its own (flow and sequence); an
// answer that names no probe (a UDP datagram) counts only after the probe
// left; without both stamps the sample falls back to the kernel's.
func TestTargetEBPFJoin(t *testing.T) {
	st := &fakeStamper{watched: map[[2]uint16]bool{}}
	p, err := NewTargetProber(TargetConfig{Timestamps: "auto", EBPF: st, StampWait: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	target := netip.MustParseAddr("198.18.2.1")
	local := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.1"), 40000)
	stamp := func(kind StampKind, proto uint8, seq uint64, at int64) Stamp {
		return Stamp{Kind: kind, Type: proto, Local: local, Remote: target, Seq: seq, Time: at}
	}
	for _, tc := range []struct {
		name   string
		proto  uint8
		seq    uint64
		stamps []Stamp
		want   Source
		rtt    time.Duration
	}{
		{"tcp", unix.IPPROTO_TCP, 7, []Stamp{stamp(StampTargetTx, 6, 7, 1000), stamp(StampTargetRx, 6, 7, 4000)}, SourceEBPF, 3 * time.Microsecond},
		{"tcp answer to another probe", unix.IPPROTO_TCP, 7, []Stamp{stamp(StampTargetTx, 6, 7, 1000), stamp(StampTargetRx, 6, 6, 4000)}, SourceKernel, 2 * time.Microsecond},
		{"another protocol's stamps", unix.IPPROTO_TCP, 7, []Stamp{stamp(StampTargetTx, 17, 7, 1000), stamp(StampTargetRx, 17, 7, 4000)}, SourceKernel, 2 * time.Microsecond},
		{"udp answer naming no probe", unix.IPPROTO_UDP, 9, []Stamp{stamp(StampTargetTx, 17, 9, 1000), stamp(StampTargetRx, 17, 0, 6000)}, SourceEBPF, 5 * time.Microsecond},
		{"udp answer before the probe left", unix.IPPROTO_UDP, 9, []Stamp{stamp(StampTargetRx, 17, 0, 500), stamp(StampTargetTx, 17, 9, 1000)}, SourceKernel, 2 * time.Microsecond},
		{"tcp answer naming no probe", unix.IPPROTO_TCP, 7, []Stamp{stamp(StampTargetTx, 6, 7, 1000), stamp(StampTargetRx, 6, 0, 4000)}, SourceKernel, 2 * time.Microsecond},
		{"no transmit stamp", unix.IPPROTO_ICMP, 3, []Stamp{stamp(StampTargetRx, 1, 3, 4000)}, SourceKernel, 2 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := ebpfKey{proto: tc.proto, remote: target, port: local.Port()}
			w := p.eb.arm(k, tc.seq)
			defer p.eb.disarm(k, w)
			for _, s := range tc.stamps {
				p.HandleStamp(s)
			}
			var r TargetResult
			p.finish(&r, w, 0, 100_000, 10_000, 12_000) // kernel stamps: 2 µs
			if r.Source != tc.want || r.RTT != tc.rtt {
				t.Fatalf("source %s RTT %v, want %s %v", r.Source, r.RTT, tc.want, tc.rtt)
			}
		})
	}
	if st.kicks == 0 {
		t.Error("a missing stamp never kicked the loader's reader")
	}
	// kernel: the loader is not used at all.
	kp, err := NewTargetProber(TargetConfig{Timestamps: "kernel", EBPF: st})
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	if kp.eb != nil {
		t.Error("-timestamps kernel joined eBPF stamps")
	}
}
