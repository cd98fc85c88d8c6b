package plan

import (
	"testing"
	"time"
)

// TestRateHoldsUnderFakeClock drives the cap with a fake clock: over any
// simulated run, what it lets through never exceeds burst + rate × elapsed,
// and a caller asking for more than that is held (and says so).
func TestRateHoldsUnderFakeClock(t *testing.T) {
	const perSecond = 100
	r := NewRate(perSecond)
	now := t0
	sent := 0
	for step := 0; step < 1000; step++ { // 10 s in 10 ms steps, asking 5 per step (500/s)
		sent += r.Take(now, 5)
		now = now.Add(10 * time.Millisecond)
		if limit := perSecond + perSecond*now.Sub(t0).Seconds(); float64(sent) > limit+1e-9 {
			t.Fatalf("after %v: %d pings let through, cap allows %.0f", now.Sub(t0), sent, limit)
		}
	}
	if sent < 1000 {
		t.Errorf("only %d pings in 10 s at 100/s: the cap is too strict", sent)
	}
	if s, held := r.Stretched(now, time.Second); !s || held == 0 {
		t.Errorf("asked 500/s of a 100/s cap: stretched=%v held=%d", s, held)
	}
	if s, _ := r.Stretched(now.Add(2*time.Second), time.Second); s {
		t.Errorf("still stretched two idle seconds later")
	}
}

func TestRateUnderCapIsNotStretched(t *testing.T) {
	r := NewRate(50)
	now := t0
	for step := 0; step < 100; step++ {
		if got := r.Take(now, 1); got != 1 {
			t.Fatalf("step %d: 1 per 100 ms under a 50/s cap was held", step)
		}
		if d := r.Reserve(now, 1); d != 0 {
			t.Fatalf("step %d: reserve waited %v", step, d)
		}
		now = now.Add(100 * time.Millisecond)
	}
	if s, held := r.Stretched(now, time.Hour); s || held != 0 {
		t.Errorf("stretched=%v held=%d under the cap", s, held)
	}
}

// TestReserveSpacesTraces: trace probes reserved faster than the cap wait
// so that probes sent by time T never exceed burst + rate × T.
func TestReserveSpacesTraces(t *testing.T) {
	r := NewRate(50)
	var at []time.Duration
	for i := 0; i < 40; i++ { // 40 traces of 5 probes, all asked at t0
		at = append(at, r.Reserve(t0, 5))
	}
	for i, d := range at {
		probes := float64(5 * (i + 1))
		if allowed := 50 + 50*d.Seconds(); probes > allowed+1e-6 {
			t.Fatalf("trace %d sent at +%v: %v probes, cap allows %v", i, d, probes, allowed)
		}
	}
	if last := at[len(at)-1]; last < 2*time.Second || last > 3*time.Second {
		t.Errorf("200 probes at 50/s with 50 burst: last waits %v, want 3 s", last)
	}
	// Larger than the burst: split, still waits.
	if d := NewRate(2).Reserve(t0, 7); d < 2*time.Second {
		t.Errorf("7 probes at 2/s waited %v", d)
	}
}

func TestRouterBudget(t *testing.T) {
	b := NewRouterBudget(10)
	now := t0
	if d := b.Reserve(now, []string{"r1", "r2"}); d != 0 {
		t.Fatalf("first probes waited %v", d)
	}
	// r1 asked 20 more at once: 9 left in its burst, the rest waits ~1.1 s;
	// r2 is not held by r1's budget.
	rs := make([]string, 20)
	for i := range rs {
		rs[i] = "r1"
	}
	if d := b.Reserve(now, rs); d < time.Second {
		t.Errorf("r1 over budget waited %v", d)
	}
	if d := b.Reserve(now, []string{"r2"}); d != 0 {
		t.Errorf("r2 waited %v for r1's budget", d)
	}
	if !b.Stretched(now, time.Second) {
		t.Errorf("not stretched after r1 was held")
	}
	// 100 members share a target of 500/s: 5/s each; over 10 s of asking
	// 20/s, one router gets at most burst + 5 × 10 answers from this agent.
	b = NewRouterBudget(500)
	b.SetMembers(100)
	if got := b.PerRouter(); got != 5 {
		t.Fatalf("share %v, want 5", got)
	}
	sent := 0
	for at := time.Duration(0); at < 10*time.Second; at += 50 * time.Millisecond {
		if b.Reserve(now.Add(at), []string{"spine1"}) == 0 {
			sent++
		}
	}
	if sent > 5+50 {
		t.Errorf("%d answers in 10 s under a 5/s share", sent)
	}
}
