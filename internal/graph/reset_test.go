package graph

import (
	"testing"
	"time"
)

// TestResetPeer: a restarted peer's routes keep their hops but their rings
// start over, in both directions; the pings lost during its downtime, also
// ones that time out after the reset, do not count; routes of other peers
// keep their samples; subscribers get the emptied metrics at once.
func TestResetPeer(t *testing.T) {
	g, clk := newTestGraph(t)
	kAC := key(hA, hC, 40000)
	kBA := key(hB, hA, 40001)
	g.SetRoute(kAB, hops(hA, r1, hB))
	g.SetRoute(kAC, hops(hA, r2, hC))
	g.SetRoute(kBA, hops(hB, r1, hA))
	t0 := clk.Now()
	for i := range 10 {
		sent := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		g.AddSample(kAB, Sample{Seq: uint64(i), Sent: sent, Lost: i >= 5})
		g.AddSample(kBA, Sample{Seq: uint64(i), Sent: sent, Lost: i >= 5})
		g.AddSample(kAC, Sample{Seq: uint64(i), Sent: sent, RTT: time.Millisecond})
	}
	ab, _ := g.RouteOf(kAB)
	if m := routeByID(t, g.Snapshot(), ab).Metrics; m.Lost != 5 {
		t.Fatalf("before reset: lost %d, want 5", m.Lost)
	}
	sub := g.Subscribe(g.Snapshot().EventID, 0)
	defer sub.Close()

	clk.Advance(2 * time.Second)
	since := clk.Now()
	if n := g.ResetPeer(addr(hB), since); n != 2 {
		t.Fatalf("ResetPeer reset %d keys, want 2 (A→B and B→A)", n)
	}
	updated := map[string]Metrics{}
	for len(updated) < 2 {
		select {
		case ev := <-sub.C:
			if ev.Type != EventRouteUpdate {
				t.Fatalf("unexpected %s event", ev.Type)
			}
			updated[ev.Route.ID] = ev.Route.Metrics
		default:
			t.Fatalf("only %d route updates after ResetPeer, want 2 at once", len(updated))
		}
	}
	for id, m := range updated {
		if m.Samples != 0 || m.Lost != 0 {
			t.Fatalf("route %s after reset: %d samples, %d lost; want empty", id, m.Samples, m.Lost)
		}
	}
	// A ping sent before the reset that times out now is refused; one sent
	// after counts.
	g.AddSample(kAB, Sample{Seq: 10, Sent: since.Add(-time.Millisecond), Lost: true})
	g.AddSample(kAB, Sample{Seq: 11, Sent: since.Add(time.Millisecond), RTT: time.Millisecond})
	snap := g.Snapshot()
	if m := routeByID(t, snap, ab).Metrics; m.Samples != 1 || m.Lost != 0 {
		t.Fatalf("after reset: %d samples %d lost, want 1 and 0 (the in-flight loss refused)", m.Samples, m.Lost)
	}
	ac, _ := g.RouteOf(kAC)
	if m := routeByID(t, snap, ac).Metrics; m.Samples != 10 {
		t.Fatalf("A→C lost its samples: %d, want 10", m.Samples)
	}
	if id, ok := g.RouteOf(kBA); !ok || len(routeByID(t, snap, id).Hops) != 3 {
		t.Fatal("B→A route gone after reset; want its hops kept")
	}
	if n := g.ResetPeer(addr("198.18.9.9"), since); n != 0 {
		t.Fatalf("unknown peer reset %d keys", n)
	}
}

// TestLastAnswer: the latest answered ping to a peer on any key, not a
// lost one, not a ping from it.
func TestLastAnswer(t *testing.T) {
	g, clk := newTestGraph(t)
	kAB2 := key(hA, hB, 40002)
	kBA := key(hB, hA, 40001)
	g.SetRoute(kAB, hops(hA, r1, hB))
	g.SetRoute(kAB2, hops(hA, r2, hB))
	g.SetRoute(kBA, hops(hB, r1, hA))
	if got := g.LastAnswer(addr(hB)); !got.IsZero() {
		t.Fatalf("no samples: LastAnswer %v, want zero", got)
	}
	t0 := clk.Now()
	g.AddSample(kAB, Sample{Seq: 1, Sent: t0, RTT: time.Millisecond})
	g.AddSample(kAB2, Sample{Seq: 1, Sent: t0.Add(time.Second), RTT: time.Millisecond})
	g.AddSample(kAB, Sample{Seq: 2, Sent: t0.Add(2 * time.Second), Lost: true})
	g.AddSample(kBA, Sample{Seq: 1, Sent: t0.Add(3 * time.Second), RTT: time.Millisecond})
	if got, want := g.LastAnswer(addr(hB)), t0.Add(time.Second); !got.Equal(want) {
		t.Fatalf("LastAnswer(B) = %v, want %v (the answered ping on the second path)", got, want)
	}
	if got, want := g.LastAnswer(addr(hA)), t0.Add(3*time.Second); !got.Equal(want) {
		t.Fatalf("LastAnswer(A) = %v, want %v", got, want)
	}
}
