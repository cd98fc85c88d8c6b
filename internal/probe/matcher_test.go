package probe

import (
	"net/netip"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
)

type matcherHarness struct {
	t   *testing.T
	m   *matcher
	k   FlowKey
	now int64
	out []Result
}

func newHarness(t *testing.T, want Source) *matcherHarness {
	t.Helper()
	h := &matcherHarness{t: t, k: FlowKey{Peer: netip.MustParseAddr("198.18.0.2"), SrcPort: 33500}, now: 1e9}
	h.m = newMatcher(time.Second, 20*time.Millisecond, 5*time.Second, want, func(r Result) { h.out = append(h.out, r) })
	return h
}

func (h *matcherHarness) send() uint64 { return h.m.register(h.k, h.now, time.Unix(0, h.now)) }

// ack delivers an ack for seq with the given reflector counters; t2/t3 are
// fixed so that dwell = 10µs.
func (h *matcherHarness) ack(seq, rx, acks uint64) RejectReason {
	h.t.Helper()
	a := Packet{Type: TypeAck, Seq: seq, T2: 5000, T3: 15000, RxCount: rx, AckCount: acks}
	var t4 [numSources]int64
	t4[idxUser] = h.now
	return h.m.ack(h.k, &a, t4, h.now)
}

func (h *matcherHarness) advance(d time.Duration) { h.now += int64(d); h.m.expire(h.now) }

// lost counts the losses by their final direction: a Resolves result turns
// one unknown loss of its seq into a known one.
func (h *matcherHarness) lost() (fwd, rev, unk int) {
	unknown := map[uint64]bool{}
	for _, r := range h.out {
		if !r.Lost {
			continue
		}
		if r.Resolves {
			if !unknown[r.Seq] {
				h.t.Fatalf("seq %d resolved without an unknown loss before it", r.Seq)
			}
			delete(unknown, r.Seq)
			unk--
		} else if r.Dir == graph.LossUnknown {
			unknown[r.Seq] = true
		}
		switch r.Dir {
		case graph.LossForward:
			fwd++
		case graph.LossReverse:
			rev++
		default:
			unk++
		}
	}
	return
}

func TestMatcherRTT(t *testing.T) {
	h := newHarness(t, SourceUser)
	seq := h.send()
	h.now += int64(300 * time.Microsecond)
	if r := h.ack(seq, 1, 1); r != RejectNone {
		t.Fatalf("ack: %v", r)
	}
	if len(h.out) != 1 {
		t.Fatalf("%d results, want 1", len(h.out))
	}
	r := h.out[0]
	if r.Lost || r.RTT != 290*time.Microsecond || r.Source != "user" || r.Seq != 1 {
		t.Fatalf("result %+v, want RTT 290µs (300µs minus 10µs dwell), user", r)
	}
	if got := h.ack(seq, 1, 2); got != RejectReplay {
		t.Fatalf("duplicate ack: %v, want replay", got)
	}
	if got := h.ack(99, 1, 2); got != RejectUnknownFlow {
		t.Fatalf("never-sent seq: %v, want unknown_flow", got)
	}
	other := &Packet{Type: TypeAck, Seq: 1}
	if got := h.m.ack(FlowKey{Peer: h.k.Peer, SrcPort: 1}, other, [numSources]int64{}, h.now); got != RejectUnknownFlow {
		t.Fatalf("unknown flow: %v", got)
	}
	if len(h.out) != 1 {
		t.Fatalf("rejected acks produced results: %+v", h.out)
	}
	st := h.m.stats()
	if st.duplicate != 1 || st.unknown != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMatcherLateAndReorder(t *testing.T) {
	h := newHarness(t, SourceUser)
	s1, s2, s3 := h.send(), h.send(), h.send()
	h.now += int64(time.Millisecond)
	h.ack(s2, 2, 1)
	h.ack(s1, 2, 2) // reordered
	if st := h.m.stats(); st.reordered != 1 {
		t.Fatalf("reordered %d, want 1", st.reordered)
	}
	h.advance(1500 * time.Millisecond) // s3 times out
	if got := h.ack(s3, 3, 3); got != RejectNone {
		t.Fatalf("late ack rejected: %v", got)
	}
	if got := h.ack(s3, 3, 3); got != RejectReplay {
		t.Fatalf("second late ack: %v, want replay", got)
	}
	if st := h.m.stats(); st.late != 1 || st.duplicate != 1 {
		t.Fatalf("stats %+v", st)
	}
	ok := 0
	for _, r := range h.out {
		if !r.Lost {
			ok++
		}
		if r.Seq == s3 && !r.Lost {
			t.Fatal("late ack turned a timed-out ping into a sample")
		}
	}
	if ok != 2 {
		t.Fatalf("%d samples, want 2", ok)
	}
}

func TestMatcherDirection(t *testing.T) {
	tests := []struct {
		name string
		// for each ping: 'o' ok, 'f' lost forward, 'r' lost reverse
		pattern         string
		fwd, rev, unk   int
		trailingUnacked bool
	}{
		{"no loss", "oooo", 0, 0, 0, false},
		{"one forward", "ofoo", 1, 0, 0, false},
		{"one reverse", "oroo", 0, 1, 0, false},
		{"mixed", "ofrffro", 3, 2, 0, false},
		{"first lost forward", "fo", 1, 0, 0, false},
		{"tail never resolved", "oof", 0, 0, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, SourceUser)
			var rx, acks uint64
			for _, c := range tc.pattern {
				seq := h.send()
				if c != 'f' {
					rx++
					acks++
				}
				if c == 'o' {
					h.ack(seq, rx, acks)
				}
				h.advance(1100 * time.Millisecond)
			}
			h.advance(6 * time.Second)
			fwd, rev, unk := h.lost()
			if fwd != tc.fwd || rev != tc.rev || unk != tc.unk {
				t.Fatalf("fwd/rev/unknown = %d/%d/%d, want %d/%d/%d", fwd, rev, unk, tc.fwd, tc.rev, tc.unk)
			}
		})
	}
}

// TestMatcherLossReportedAtTimeout: a lost ping is reported when it times
// out, direction unknown, however long its direction takes to learn (a flow
// whose port takes turns is pinged every few intervals); the next ack's
// counters resolve it, and the result names the same probe.
func TestMatcherLossReportedAtTimeout(t *testing.T) {
	h := newHarness(t, SourceUser)
	lost := h.send()
	h.advance(1100 * time.Millisecond)
	if len(h.out) != 1 || !h.out[0].Lost || h.out[0].Dir != graph.LossUnknown || h.out[0].Resolves || h.out[0].Seq != lost {
		t.Fatalf("at the timeout: %+v, want one loss of seq %d, direction unknown", h.out, lost)
	}
	h.advance(3 * time.Second) // the flow's next turn (within the harness's 5 s window)
	seq := h.send()
	h.ack(seq, 1, 1) // the reflector got 1 of 2: the lost one never arrived
	if len(h.out) != 3 {
		t.Fatalf("results %+v, want the loss, its resolution and the sample", h.out)
	}
	if r := h.out[1]; !r.Resolves || r.Dir != graph.LossForward || r.Seq != lost {
		t.Errorf("resolution %+v, want seq %d forward", r, lost)
	}
	if fwd, rev, unk := h.lost(); fwd != 1 || rev != 0 || unk != 0 {
		t.Errorf("fwd/rev/unknown = %d/%d/%d, want 1/0/0", fwd, rev, unk)
	}
}

// A ping that times out only after a later ack already passed it takes its
// direction from the interval record.
func TestMatcherDirectionAfterBoundary(t *testing.T) {
	h := newHarness(t, SourceUser)
	h.send()       // 1: lost forward
	s2 := h.send() // 2 ok
	h.now += int64(time.Millisecond)
	h.ack(s2, 1, 1) // interval (0,2]: 2 sent, 1 received → 1 forward
	h.advance(2 * time.Second)
	if fwd, rev, unk := h.lost(); fwd != 1 || rev != 0 || unk != 0 {
		t.Fatalf("fwd/rev/unknown = %d/%d/%d, want 1/0/0", fwd, rev, unk)
	}
}

func TestMatcherReflectorRestart(t *testing.T) {
	h := newHarness(t, SourceUser)
	h.ack(h.send(), 10, 10) // counters ahead (fine: first boundary)
	h.send()                // lost
	h.advance(1100 * time.Millisecond)
	h.ack(h.send(), 1, 1) // counters went back: restart → unknown
	if fwd, rev, unk := h.lost(); fwd+rev != 0 || unk != 1 {
		t.Fatalf("fwd/rev/unknown = %d/%d/%d, want 0/0/1", fwd, rev, unk)
	}
}

func TestMatcherStampJoin(t *testing.T) {
	t.Run("ebpf stamps arrive", func(t *testing.T) {
		h := newHarness(t, SourceEBPF)
		seq := h.send()
		h.m.stamp(h.k, seq, true, idxEBPF, h.now+2000, 0, h.now)
		h.now += int64(time.Millisecond)
		h.ack(seq, 1, 1)
		if len(h.out) != 0 {
			t.Fatal("emitted before the ebpf rx stamp")
		}
		h.m.stamp(h.k, seq, false, idxEBPF, h.now-3000, 0, h.now)
		if len(h.out) != 1 || h.out[0].Source != "ebpf" {
			t.Fatalf("got %+v, want one ebpf sample", h.out)
		}
		if want := time.Duration(int64(time.Millisecond) - 5000 - 10000); h.out[0].RTT != want {
			t.Fatalf("rtt %v, want %v", h.out[0].RTT, want)
		}
	})
	t.Run("fallback to kernel", func(t *testing.T) {
		h := newHarness(t, SourceEBPF)
		seq := h.send()
		h.m.stamp(h.k, seq, true, idxEBPF, h.now+2000, 0, h.now) // ebpf tx only
		h.m.stamp(h.k, seq, true, idxKernel, h.now+1000, 0, h.now)
		h.now += int64(time.Millisecond)
		var t4 [numSources]int64
		t4[idxUser], t4[idxKernel] = h.now, h.now-500
		h.m.ack(h.k, &Packet{Type: TypeAck, Seq: seq, T2: 5000, T3: 15000, RxCount: 1, AckCount: 1}, t4, h.now)
		h.advance(10 * time.Millisecond)
		if len(h.out) != 0 {
			t.Fatal("emitted before the stamp wait")
		}
		h.advance(20 * time.Millisecond)
		if len(h.out) != 1 || h.out[0].Source != "kernel" || h.out[0].T1 != 1e9+1000 {
			t.Fatalf("got %+v, want one kernel sample", h.out)
		}
		if h.m.stats().stampFallback != 1 {
			t.Fatal("fallback not counted")
		}
	})
	// An arrival stamp before T1 + dwell is impossible: the hook's later
	// stamp gives the RTT, and the rejection is counted.
	for _, tc := range []struct {
		name          string
		arrival, hook int64 // after T1
		rtt           time.Duration
		rejected      uint64
	}{
		{"impossible arrival stamp", -30000, 60000, 50 * time.Microsecond, 1},
		{"possible arrival stamp is kept", 40000, 60000, 30 * time.Microsecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, SourceEBPF)
			seq := h.send()
			t1 := h.now + 2000
			h.m.stamp(h.k, seq, true, idxEBPF, t1, 0, h.now)
			h.now += int64(100 * time.Microsecond)
			h.ack(seq, 1, 1) // dwell T3-T2 = 10 µs
			h.m.stamp(h.k, seq, false, idxEBPF, t1+tc.arrival, t1+tc.hook, h.now)
			if len(h.out) != 1 || h.out[0].Source != "ebpf" || h.out[0].RTT != tc.rtt {
				t.Fatalf("got %+v, want one ebpf sample with RTT %v", h.out, tc.rtt)
			}
			if got := h.m.stats().arrivalRejected; got != tc.rejected {
				t.Fatalf("%d arrival stamps rejected, want %d", got, tc.rejected)
			}
		})
	}
	t.Run("stamp for unknown probe", func(t *testing.T) {
		h := newHarness(t, SourceEBPF)
		if h.m.stamp(h.k, 7, true, idxEBPF, 1, 0, 1) {
			t.Fatal("stamp for a probe never sent was joined")
		}
	})
}

func TestMatcherSendFailed(t *testing.T) {
	h := newHarness(t, SourceUser)
	h.m.sendFailed(h.k, h.send())
	h.now += int64(time.Millisecond)
	h.ack(h.send(), 1, 1)
	h.advance(6 * time.Second)
	// The failed send is one forward loss, and must not make the interval
	// look like it had another one.
	if fwd, rev, unk := h.lost(); fwd != 1 || rev != 0 || unk != 0 {
		t.Fatalf("fwd/rev/unknown = %d/%d/%d, want 1/0/0", fwd, rev, unk)
	}
}

func TestMatcherFlush(t *testing.T) {
	h := newHarness(t, SourceUser)
	h.send()
	h.m.flush()
	if _, _, unk := h.lost(); unk != 1 {
		t.Fatalf("flush: %+v", h.out)
	}
}

func TestMatcherStateBounded(t *testing.T) {
	h := newHarness(t, SourceUser)
	h.ack(h.send(), 1, 1)
	h.advance(10 * time.Millisecond)
	if len(h.m.active) != 0 {
		t.Fatalf("active flows %d after everything resolved", len(h.m.active))
	}
	for range 200 { // many timeouts: the timed-out list stays bounded
		h.send()
		h.advance(1100 * time.Millisecond)
	}
	if n := len(h.m.flows[h.k].timedOut); n > maxTimedOut {
		t.Fatalf("timed-out list %d", n)
	}
	h.advance(flowIdle + 2*time.Minute)
	h.advance(time.Minute)
	if len(h.m.flows) != 0 || len(h.m.active) != 0 {
		t.Fatalf("idle flow kept: %d flows, %d active", len(h.m.flows), len(h.m.active))
	}
}

// TestMatcherReorderedPingNotForward: a ping that reaches the reflector
// after the next one's (reordered on the way) is missing from the next
// ack's count. It is no forward loss, and a reverse loss of the same
// interval must not take it: the pending ping has the first claim, and
// its own late ack (a count above the boundary's) settles it.
func TestMatcherReorderedPingNotForward(t *testing.T) {
	h := newHarness(t, SourceUser)
	h.send() // s1: the reflector gets it; its ack is lost
	h.advance(100 * time.Millisecond)
	s2 := h.send() // overtaken: reaches the reflector after s3
	h.advance(100 * time.Millisecond)
	s3 := h.send()
	h.advance(850 * time.Millisecond) // s1 times out
	h.ack(s3, 2, 2)                   // counts s1 and s3, not s2 yet
	h.advance(10 * time.Millisecond)
	h.ack(s2, 3, 3) // s2 arrived after s3: a count above s3's
	h.advance(40 * time.Second)
	if fwd, rev, unk := h.lost(); fwd != 0 || rev != 1 || unk != 0 {
		t.Errorf("fwd/rev/unknown = %d/%d/%d, want 0/1/0 (s1 lost in reverse; s2 was late, not lost)", fwd, rev, unk)
	}
}
