package aggregator

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
)

// BenchmarkBatchForms compares the two forms of route-batch events in the
// same run, on one member graph streamed to two aggregator graphs at once
// (one per form). The member has 2,000 routes of 1 or 4 ports, its
// default 100-sample windows full; a batch is 5 s of samples (one per
// route per second, the route's ports taking turns as the pinger has
// them, 2% lost, half of them resolved later). Per route in a batch it
// reports:
//   - bytes: the event's JSON, as the stream sends it;
//   - encode-ns: the member building the event and encoding it (the
//     window metrics both forms start from are computed before), in CPU
//     time of the benchmark's thread;
//   - apply-ns: the aggregator decoding, checking and applying it
//     (member.apply, as the stream does), the same way;
//   - heap-B: the aggregator's live heap per route with each form;
//
// and each delta/metrics ratio. Run:
//
//	go test -run '^$' -bench BatchForms -benchtime 20x ./internal/aggregator
func BenchmarkBatchForms(b *testing.B) {
	for _, ports := range []int{1, 4} {
		b.Run(fmt.Sprintf("ports=%d", ports), func(b *testing.B) { benchBatchForms(b, ports) })
	}
}

func benchBatchForms(b *testing.B, ports int) {
	const routes, perBatch = 2000, 5
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	gcfg := graph.DefaultConfig()
	gcfg.Now = func() time.Time { return now }
	mg := graph.New(gcfg)
	rng := rand.New(rand.NewPCG(1, 2))
	var keys [][]graph.RouteKey
	for i := range routes {
		dst := netip.AddrFrom4([4]byte{198, 18, byte(16 + i/250), byte(1 + i%250)})
		ks := make([]graph.RouteKey, ports)
		for p := range ks {
			ks[p] = graph.RouteKey{Src: hA, Dst: dst, SrcPort: uint16(33436 + p)}
			mg.SetRoute(ks[p], hopsOf(hA, leaf1, []netip.Addr{sp1, sp2}[i%2], leaf2, dst))
		}
		keys = append(keys, ks)
	}
	forms := []struct {
		name string
		sub  *graph.Subscription
		g    *graph.Graph
		m    *member
		stat struct {
			bytes, routes       int
			encode, apply       time.Duration
			heapPerRoute, ratio float64
		}
	}{{name: "metrics"}, {name: "delta"}}
	for i := range forms {
		f := &forms[i]
		if f.name == "delta" {
			f.sub = mg.SubscribeDeltas(0, 1<<16)
		} else {
			f.sub = mg.SubscribeBatched(0, 1<<16)
		}
		f.g = graph.New(graph.DefaultConfig())
		f.m = newTestMember(b, f.g)
		f.m.batched, f.m.form = true, api.BatchFormMetrics
		if f.name == "delta" {
			f.m.form = api.BatchFormDeltas
		}
		f.m.applySnapshot(*f.sub.Snapshot)
		f.m.instance, f.m.lastID, f.m.synced = "f", f.sub.Snapshot.EventID, true
	}
	type lost struct {
		k    graph.RouteKey
		sent time.Time
	}
	var unknown []lost
	seq := uint64(0)
	// cycle is one batch interval of samples, then both batches: taken,
	// encoded and applied (timed when timed is set).
	cycle := func(timed bool) {
		for s := range perBatch {
			for i, ks := range keys {
				seq++
				k := ks[(s+i)%len(ks)]
				sm := graph.Sample{Seq: seq, Sent: now, Source: "ebpf"}
				switch x := rng.IntN(100); {
				case x < 1:
					sm.Lost = true
					unknown = append(unknown, lost{k, now})
				case x < 2:
					sm.Lost, sm.Dir = true, graph.LossForward
				default:
					sm.RTT = time.Duration(80_000 + rng.IntN(30_000) + int(math.Abs(rng.NormFloat64())*10_000))
				}
				mg.AddSample(k, sm)
			}
			now = now.Add(time.Second)
		}
		for _, l := range unknown {
			mg.AddSample(l.k, graph.Sample{Sent: l.sent, Lost: true, Dir: graph.LossReverse, Resolves: true})
		}
		unknown = unknown[:0]
		mg.Flush()
		_ = mg.Snapshot() // the window metrics both forms start from
		for i := range forms {
			f := &forms[i]
			t0 := threadCPU(b)
			if f.sub.Batch() == 0 {
				b.Fatalf("%s: empty batch", f.name)
			}
			ev := <-f.sub.C
			data, err := json.Marshal(ev)
			if err != nil {
				b.Fatal(err)
			}
			t1 := threadCPU(b)
			sse := sseEvent{Name: string(ev.Type), ID: fmt.Sprintf("f-%d", ev.ID), HasID: true, Data: data}
			if reason, err := f.m.apply(sse); reason != "" || err != nil {
				b.Fatalf("%s: apply: %s %v", f.name, reason, err)
			}
			t2 := threadCPU(b)
			if timed {
				f.stat.bytes += len(data)
				f.stat.routes += len(ev.Batch)
				if ev.Deltas != nil {
					f.stat.routes += len(ev.Deltas.Routes)
				}
				f.stat.encode += t1 - t0
				f.stat.apply += t2 - t1
			}
		}
	}
	// Times are this thread's CPU time: what the work costs, not the
	// other engineers' load on the machine or the GC's background workers.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range 25 { // fill the windows (and the replicas)
		cycle(false)
	}
	for b.Loop() {
		cycle(true)
	}
	// Both aggregators hold the member's metrics exactly.
	want := mg.Snapshot().Routes
	for _, f := range forms {
		got := f.g.Snapshot().Routes
		for i := range want {
			if got[i].ID != want[i].ID || fmt.Sprint(got[i].Metrics) != fmt.Sprint(want[i].Metrics) {
				b.Fatalf("%s: route %s: aggregator %+v, member %+v", f.name, want[i].ID, got[i].Metrics, want[i].Metrics)
			}
		}
	}
	// The heap each aggregator graph (and its member state) holds: what
	// the heap loses when it goes.
	heap := func() float64 {
		runtime.GC()
		runtime.GC() // and what sync.Pools kept one more cycle
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc)
	}
	for i := len(forms) - 1; i >= 0; i-- {
		before := heap()
		forms[i].g, forms[i].m = nil, nil
		forms[i].stat.heapPerRoute = (before - heap()) / routes
	}
	runtime.KeepAlive(mg)
	m, d := forms[0].stat, forms[1].stat
	per := func(x, n int) float64 { return float64(x) / float64(n) }
	for _, f := range forms {
		s := f.stat
		b.ReportMetric(per(s.bytes, s.routes), f.name+"-bytes/route")
		b.ReportMetric(per(int(s.encode), s.routes), f.name+"-encode-ns/route")
		b.ReportMetric(per(int(s.apply), s.routes), f.name+"-apply-ns/route")
		b.ReportMetric(s.heapPerRoute, f.name+"-heap-B/route")
	}
	b.ReportMetric(per(d.bytes, d.routes)/per(m.bytes, m.routes), "delta/metrics-bytes")
	b.ReportMetric(per(int(d.encode), d.routes)/per(int(m.encode), m.routes), "delta/metrics-encode")
	b.ReportMetric(per(int(d.apply), d.routes)/per(int(m.apply), m.routes), "delta/metrics-apply")
	b.ReportMetric(d.heapPerRoute/m.heapPerRoute, "delta/metrics-heap")
}

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
