package aggregator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
)

// deltaStream is a real member's stream in delta form: its snapshot, then
// two route-batch events (the first whole, the second partial).
func deltaStream(tb testing.TB) []byte {
	tb.Helper()
	now := time.Date(2026, 11, 23, 19, 0, 0, 0, time.UTC)
	cfg := graph.DefaultConfig()
	cfg.RingSize = 20
	cfg.Now = func() time.Time { return now }
	g := graph.New(cfg)
	k := graph.RouteKey{Src: hA, Dst: hB, SrcPort: 33436}
	g.SetRoute(k, hopsOf(hA, leaf1, sp1, leaf2, hB))
	sub := g.SubscribeDeltas(0, 1<<10)
	var out bytes.Buffer
	snap, _ := json.Marshal(sub.Snapshot)
	fmt.Fprintf(&out, "event: snapshot\nid: f-%d\ndata: %s\n\n", sub.Snapshot.EventID, snap)
	for round := range 2 {
		addSamples(g, k, round*10, 10, 3)
		now = now.Add(2 * time.Second)
		g.Flush()
		sub.Batch()
		for ev := range sub.C {
			data, _ := json.Marshal(ev)
			fmt.Fprintf(&out, "event: %s\nid: f-%d\ndata: %s\n\n", ev.Type, ev.ID, data)
			if ev.Type == graph.EventRouteBatch {
				break
			}
		}
	}
	return out.Bytes()
}

// FuzzDeltaStream is FuzzStream on a stream in delta form: arbitrary
// bytes after (or instead of) a real member's snapshot and delta batches
// never panic, and the graph holds what the member believes it imported.
func FuzzDeltaStream(f *testing.F) {
	seed := deltaStream(f)
	f.Add(seed)
	f.Add(bytes.Replace(seed, []byte(`"full":true`), []byte(`"full":false`), 1))
	f.Add(bytes.Replace(seed, []byte(`"n":`), []byte(`"n":99`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := graph.New(graph.DefaultConfig())
		m := newTestMember(t, g)
		m.batched, m.form = true, api.BatchFormDeltas
		feedStream(t, g, m, b, 1<<16)
	})
}

// TestDeltaStreamBadBatch: a delta batch that does not check out brings a
// fresh snapshot (bad_event), and the route keeps its metrics.
func TestDeltaStreamBadBatch(t *testing.T) {
	seed := deltaStream(t)
	g := graph.New(graph.DefaultConfig())
	m := newTestMember(t, g)
	m.batched, m.form = true, api.BatchFormDeltas
	var reasons []string
	for _, mangle := range []func([]byte) []byte{
		func(b []byte) []byte { return b },
		func(b []byte) []byte { return bytes.Replace(b, []byte(`"w":20`), []byte(`"w":-1`), 1) },
		func(b []byte) []byte { return bytes.Replace(b, []byte(`"n":`), []byte(`"n":99`), 1) },
	} {
		rd := newSSEReader(bytes.NewReader(mangle(seed)), 1<<16)
		reason := ""
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			if r, _ := m.apply(ev); r != "" && reason == "" {
				reason = r
			}
		}
		reasons = append(reasons, reason)
	}
	if want := []string{"", reasonBadEvent, reasonBadEvent}; fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Fatalf("resync reasons %q, want %q", reasons, want)
	}
	if rs := g.Snapshot().Routes; len(rs) != 1 || rs[0].Metrics.Samples != 20 {
		t.Fatalf("routes %+v, want the one route with its 20 samples", rs)
	}
}
