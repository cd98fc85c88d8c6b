package probe

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// ProbeTTLs sends each TTL asked for once, in order, ignoring TTLs that
// cannot be sent; on loopback the peer answers every TTL.
func TestProbeTTLsLoopback(t *testing.T) {
	a, b := startPair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	port := a.cfg.SrcPortStart + 1
	res, err := a.ProbeTTLs(ctx, b.LocalAddr(), port, []int{3, 1, 1, 0, MaxPadLen + 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.ProbesSent != 2 || len(res.Answers) != 2 {
		t.Fatalf("want probes for TTL 1 and 3 only: %+v", res)
	}
	for i, want := range []int{1, 3} {
		ans := res.Answers[i]
		if ans.TTL != want || !ans.Dest || ans.Unreachable || ans.Hop.Addr != b.LocalAddr() || ans.Hop.RTT <= 0 {
			t.Errorf("answer %d: %+v, want TTL %d answered by the peer", i, ans, want)
		}
	}
	if got := testutil.ToFloat64(a.met.traceProbes); got != 2 {
		t.Errorf("dnms_trace_probes_sent_total = %v, want 2", got)
	}
	// Nothing asked, nothing sent; the flow is free again.
	if res, err := a.ProbeTTLs(ctx, b.LocalAddr(), port, nil); err != nil || res.ProbesSent != 0 || len(res.Answers) != 0 {
		t.Errorf("no TTLs: %+v, %v", res, err)
	}
	if _, err := a.Trace(ctx, b.LocalAddr(), port, 4, 2); err != nil {
		t.Errorf("Trace on the same flow afterwards: %v", err)
	}
}

// With one probe in flight at a time, a TTL above the one the peer answered
// is never sent.
func TestProbeTTLsNoOvershoot(t *testing.T) {
	a, b := startPair(t, func(c *Config) { c.TraceWindow = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.ProbeTTLs(ctx, b.LocalAddr(), a.cfg.SrcPortStart, []int{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.ProbesSent != 1 || len(res.Answers) != 1 || !res.Answers[0].Dest {
		t.Fatalf("want one probe, answered by the peer: %+v", res)
	}
	// A host without dnms answers port unreachable: the peer too.
	ghost := netip.MustParseAddr("127.0.0.9")
	res, err = a.ProbeTTLs(ctx, ghost, a.cfg.SrcPortStart, []int{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.ProbesSent != 1 || !res.Answers[0].Dest || res.Answers[0].Hop.Addr != ghost {
		t.Fatalf("port unreachable from %v: %+v", ghost, res)
	}
}

// Through the lab: the hops ProbeTTLs finds at chosen TTLs are the ones a
// full Trace of the same flow finds there, and a TTL past a host that does
// not exist stays silent.
func TestLabProbeTTLs(t *testing.T) {
	lp := newLabPair(t, func(c *Config) { c.TraceTimeout = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for port := lp.a.cfg.SrcPortStart; port <= lp.a.cfg.SrcPortEnd; port++ {
		full, err := lp.a.Trace(ctx, lp.h2.Addr, port, 8, 3)
		if err != nil || !full.Reached || len(full.Hops) != 4 {
			t.Fatalf("port %d: trace %+v, %v", port, full, err)
		}
		res, err := lp.a.ProbeTTLs(ctx, lp.h2.Addr, port, []int{2, 4, 3})
		if err != nil {
			t.Fatal(err)
		}
		var got []netip.Addr
		for _, a := range res.Answers {
			got = append(got, a.Hop.Addr)
		}
		want := []netip.Addr{full.Hops[1].Addr, full.Hops[2].Addr, full.Hops[3].Addr}
		if res.ProbesSent != 3 || !slices.Equal(got, want) || res.Answers[0].Dest || !res.Answers[2].Dest {
			t.Errorf("port %d: TTLs 2-4 gave %v (%+v), the full trace %v", port, got, res, want)
		}
	}
	ghost := netip.MustParseAddr("198.19.2.200") // host2's subnet, no host
	res, err := lp.a.ProbeTTLs(ctx, ghost, lp.a.cfg.SrcPortStart, []int{1, 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Answers) != 2 || res.Answers[0].Hop.Addr != lp.f.Router("leaf1").Loopback ||
		(res.Answers[1].Hop.Addr.IsValid() && !res.Answers[1].Unreachable) {
		t.Errorf("towards nobody: %+v, want leaf1 then silence or unreachable", res)
	}
}

// An answer can reach a trace through the socket, the ring buffer or both,
// in either order: the first settles the hop, the ring's copy gives it the
// kernel's RTT, and a trace-ack's ring stamp alone never answers (only the
// socket checks the ack's HMAC).
func TestTraceTakeOrderings(t *testing.T) {
	router := netip.MustParseAddr("198.18.0.1")
	peer := netip.MustParseAddr("198.18.0.2")
	const sent, t1, rx, userRx = 1000, 1500, 9500, 40000
	icmpSock := traceEvent{seq: 7, router: router, t: userRx}
	icmpRing := traceEvent{seq: 7, router: router, t: rx, t1: t1, ring: true}
	ackSock := traceEvent{seq: 7, router: peer, dest: true, ack: true, t: userRx}
	ackRing := traceEvent{seq: 7, t: rx, t1: t1, ring: true, stampOnly: true}
	kernelRTT, userRTT := time.Duration(rx-t1), time.Duration(userRx-sent)
	for _, tc := range []struct {
		name   string
		events []traceEvent
		state  uint8
		rtt    time.Duration
		kernel bool
	}{
		{"icmp: socket only", []traceEvent{icmpSock}, hopAnswered, userRTT, false},
		{"icmp: ring only", []traceEvent{icmpRing}, hopAnswered, kernelRTT, true},
		{"icmp: socket then ring", []traceEvent{icmpSock, icmpRing}, hopAnswered, kernelRTT, true},
		{"icmp: ring then socket", []traceEvent{icmpRing, icmpSock}, hopAnswered, kernelRTT, true},
		{"icmp: ring from another router", []traceEvent{icmpSock, {seq: 7, router: peer, t: rx, t1: t1, ring: true}}, hopAnswered, userRTT, false},
		{"icmp: ring without tx stamp", []traceEvent{{seq: 7, router: router, t: rx, ring: true}}, hopAnswered, time.Duration(rx - sent), false},
		{"trace-ack: socket then ring", []traceEvent{ackSock, ackRing}, hopAnswered, kernelRTT, true},
		{"trace-ack: ring then socket", []traceEvent{ackRing, ackSock}, hopAnswered, kernelRTT, true},
		{"trace-ack: ring only", []traceEvent{ackRing}, hopInFlight, 0, false},
		{"unknown seq", []traceEvent{{seq: 8, router: router, t: rx, ring: true}}, hopInFlight, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flowRun{hops: make([]probeHop, 4), bySeq: map[uint64]int{7: 2}, inflight: 1}
			f.hops[2] = probeHop{state: hopInFlight, seq: 7, sent: sent}
			for _, ev := range tc.events {
				f.take(ev)
			}
			h := f.hops[2]
			if h.state != tc.state || h.rtt != tc.rtt || h.kernel != tc.kernel {
				t.Fatalf("hop state %d rtt %v kernel %v; want %d %v %v", h.state, h.rtt, h.kernel, tc.state, tc.rtt, tc.kernel)
			}
			if want := map[bool]int{true: 0, false: 1}[tc.state == hopAnswered]; f.inflight != want {
				t.Fatalf("inflight %d, want %d", f.inflight, want)
			}
		})
	}
}

// The ring's ICMP stamp is joined with the probe's egress stamp; an arrival
// stamp before the probe left gives way to the TC hook's.
func TestTraceTableJoinsStamps(t *testing.T) {
	k := FlowKey{Peer: netip.MustParseAddr("198.18.0.2"), SrcPort: 33436}
	router := netip.MustParseAddr("198.18.0.1")
	for _, tc := range []struct {
		name          string
		arrival, hook int64
		want          int64
	}{
		{"arrival stamp", 5000, 5400, 5000},
		{"impossible arrival stamp", 900, 5400, 5400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt := &traceTable{flows: map[FlowKey]*traceRun{}}
			run := &traceRun{seqs: map[uint64]int{7: 1}, tx: map[uint64]int64{}, events: make(chan traceEvent, 4)}
			tt.flows[k] = run
			if !tt.stampTx(k, 7, 1000) || tt.stampTx(k, 8, 1000) {
				t.Fatal("tx stamp joined wrongly")
			}
			if r := tt.replyStamp(k, 7, router, false, false, tc.arrival, tc.hook); r != RejectNone {
				t.Fatalf("reply: %v", r)
			}
			ev := <-run.events
			if ev.t1 != 1000 || ev.t != tc.want || !ev.ring {
				t.Fatalf("event %+v; want t1 1000, t %d", ev, tc.want)
			}
		})
	}
}
