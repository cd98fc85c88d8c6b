package targets

import (
	"context"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/plan"
)

// Target traces take their probes from the agent's -traceRate cap: a trace
// that sent more than it reserved leaves the cap in debt, and the next trace
// waits for it.
func TestTraceBudget(t *testing.T) {
	free := &Manager{}
	if err := free.waitTraceBudget(context.Background(), 1000); err != nil {
		t.Fatalf("no cap: waitTraceBudget = %v, want at once", err)
	}
	if got := free.chargeTrace(8, 12); got != 12 {
		t.Fatalf("next reservation %d, want the 12 probes sent", got)
	}

	rate := plan.NewRate(10) // a burst of 10 probes, then 10/s
	m := &Manager{cfg: Config{TraceRate: rate}}
	if err := m.waitTraceBudget(context.Background(), firstTraceProbes); err != nil {
		t.Fatalf("first trace within the burst: %v", err)
	}
	next := m.chargeTrace(firstTraceProbes, 30) // 22 more than reserved
	if next != 30 {
		t.Fatalf("next reservation %d, want 30", next)
	}
	if held, _ := rate.Stretched(time.Now(), time.Minute); !held {
		t.Fatal("the cap is overdrawn but does not report holding probes back")
	}
	// The cap owes 20 probes and the next trace wants 30: ~5 s at 10/s.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := m.waitTraceBudget(ctx, next); err == nil {
		t.Fatalf("next trace allowed after %v; the cap must hold it back for seconds", time.Since(start))
	}
	if chargeZero := m.chargeTrace(5, 0); chargeZero != 5 {
		t.Fatalf("a trace that sent nothing changes the reservation to %d, want 5", chargeZero)
	}
}
