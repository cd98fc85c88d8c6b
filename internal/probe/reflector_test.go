package probe

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSeqWindow(t *testing.T) {
	var w seqWindow
	for _, tc := range []struct {
		seq   uint64
		fresh bool
	}{
		{1, true}, {1, false}, {3, true}, {2, true}, {2, false}, {3, false},
		{100, true}, {37, true}, {36, false} /* 64 below 100 */, {99, true}, {99, false},
		{1000, true}, {100, false}, {999, true},
	} {
		if got := w.fresh(tc.seq); got != tc.fresh {
			t.Fatalf("fresh(%d) = %v, want %v (top %d bits %b)", tc.seq, got, tc.fresh, w.top, w.bits)
		}
	}
}

// TestReflectorCountersResist checks what a spoofer holding captured,
// authenticated probes (or no key at all) can do to the reflector's
// counters: replays count nothing, an old epoch cannot reset them, while a
// restarted prober (newer clock) or one back after a quiet spell can.
func TestReflectorCountersResist(t *testing.T) {
	r := reflector{flows: map[FlowKey]*reflFlow{}}
	k := FlowKey{Peer: netip.MustParseAddr("198.18.0.1"), SrcPort: 40000}
	const ms = int64(time.Millisecond)
	ping := func(epoch uint32, seq uint64, t1 int64, typ Type) *Packet {
		return &Packet{Type: typ, Epoch: epoch, Seq: seq, T1: t1}
	}
	step := func(p *Packet, now int64, wantRx uint64, wantRej RejectReason) {
		t.Helper()
		rx, _, rej := r.count(k, p, now)
		if rej != wantRej || (rej == RejectNone && rx != wantRx) {
			t.Fatalf("count(epoch %d seq %d t1 %d at %d) = rx %d %v, want rx %d %v", p.Epoch, p.Seq, p.T1, now, rx, rej, wantRx, wantRej)
		}
	}
	old := ping(7, 1, 1000*ms, TypePing) // captured by the attacker
	step(old, 1000*ms, 1, RejectNone)
	step(ping(9, 1, 2000*ms, TypePing), 2000*ms, 1, RejectNone) // prober restarted: newer clock
	step(ping(9, 2, 2100*ms, TypePing), 2100*ms, 2, RejectNone)
	step(ping(9, 2, 2100*ms, TypePing), 2101*ms, 0, RejectReplay)               // replayed ping
	step(ping(9, 2, 2100*ms, TypeTrace), 2102*ms, 3, RejectNone)                // a trace has its own seqs
	step(old, 2200*ms, 0, RejectReplay)                                         // old epoch, older clock: no reset
	step(ping(9, 3, 2300*ms, TypePing), 2300*ms, 4, RejectNone)                 // counters kept
	step(ping(5, 1, 10*ms, TypePing), 2300*ms+int64(epochQuiet), 1, RejectNone) // rebooted prober after a quiet spell
}

// TestEngineSpoofedPings: with a key, B's reflector answers none of the
// pings an attacker forges (no HMAC, wrong key) and a replayed genuine ping
// only once; every rejection is counted by reason, and A's real pings still
// are answered.
func TestEngineSpoofedPings(t *testing.T) {
	key := []byte("cluster probe key")
	a, b := startPair(t, func(c *Config) { c.Key = key })
	// From a source port B reflects on (one of the flow ports).
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 4), Port: int(a.cfg.SrcPortStart)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.LocalAddr(), b.cfg.PingPort))
	forged := Packet{Type: TypePing, SrcPort: uint16(conn.LocalAddr().(*net.UDPAddr).Port), Epoch: 1, Seq: 1, T1: 5}
	genuine := forged
	genuine.Seq = 2
	genuineBytes := NewCodec(key).AppendEncode(nil, &genuine)
	for _, f := range [][]byte{
		AppendEncode(nil, &forged),                                // no HMAC
		NewCodec([]byte("wrong key!")).AppendEncode(nil, &forged), // wrong HMAC
		genuineBytes, genuineBytes, genuineBytes, // answered once, then replays
	} {
		conn.WriteToUDP(f, dst)
	}
	want := map[string]float64{"hmac": 2, "replay": 2}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := map[string]float64{}
		for r := range want {
			got[r] = testutil.ToFloat64(b.met.rejected.WithLabelValues(r))
		}
		if got["hmac"] == want["hmac"] && got["replay"] == want["replay"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejections %v, want %v", got, want)
		}
		time.Sleep(5 * time.Millisecond) // polling a metric
	}
	if n := testutil.ToFloat64(b.met.reflected); n != 1 {
		t.Fatalf("reflected %v, want 1 (the first copy of the genuine ping)", n)
	}
	b.refl.mu.Lock()
	f := b.refl.flows[FlowKey{Peer: netip.MustParseAddr("127.0.0.4"), SrcPort: forged.SrcPort}]
	b.refl.mu.Unlock()
	if f == nil || f.rx != 1 {
		t.Fatalf("reflector flow %+v, want rx 1", f)
	}
	if _, err := a.Ping(b.LocalAddr(), a.cfg.SrcPortStart); err != nil {
		t.Fatal(err)
	}
	if r := collect(t, a.Engine, 1, 5*time.Second)[0]; r.Lost {
		t.Fatalf("A's ping after the attack: %+v", r)
	}
}
