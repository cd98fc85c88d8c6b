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
	const routes = 2000
	rig := newBatchRig(b, routes, func(int) int { return ports }, graph.DefaultConfig())
	// Times are this thread's CPU time: what the work costs, not the
	// other engineers' load on the machine or the GC's background workers.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rig.fill()
	for b.Loop() {
		rig.cycle(true)
	}
	rig.check()
	for i := len(rig.forms) - 1; i >= 0; i-- {
		rig.forms[i].stat.heapPerRoute = rig.drop(rig.forms[i], 0) / routes
	}
	m, d := rig.forms[0].stat, rig.forms[1].stat
	per := func(x, n int) float64 { return float64(x) / float64(n) }
	for _, f := range rig.forms {
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

// batchRig is one member graph whose routes take samples as the pinger
// has them, streamed in both batch forms to aggregator graphs (one or
// more per form, each with its own config).
type batchRig struct {
	b       *testing.B
	now     time.Time
	mg      *graph.Graph
	rng     *rand.Rand
	keys    [][]graph.RouteKey
	forms   []*batchForm
	unknown []lostSample
	seq     uint64
	tick    int // seconds so far: the ports' turn
}

// batchForm is one batch form's subscription on the member and the
// aggregator graphs it feeds.
type batchForm struct {
	name string
	sub  *graph.Subscription
	aggs []aggCopy
	stat struct {
		bytes, routes       int
		encode, apply       time.Duration
		heapPerRoute, ratio float64
	}
}

type aggCopy struct {
	g *graph.Graph
	m *member
}

type lostSample struct {
	k    graph.RouteKey
	sent time.Time
}

// newBatchRig builds the member with routes routes, route i over
// portsOf(i) source ports, and for each form one aggregator graph per
// config in aggCfgs.
func newBatchRig(b *testing.B, routes int, portsOf func(i int) int, aggCfgs ...graph.Config) *batchRig {
	rig := &batchRig{b: b, now: time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC), rng: rand.New(rand.NewPCG(1, 2))}
	gcfg := graph.DefaultConfig()
	gcfg.Now = func() time.Time { return rig.now }
	rig.mg = graph.New(gcfg)
	for i := range routes {
		dst := netip.AddrFrom4([4]byte{198, 18, byte(16 + i/250), byte(1 + i%250)})
		ks := make([]graph.RouteKey, portsOf(i))
		for p := range ks {
			ks[p] = graph.RouteKey{Src: hA, Dst: dst, SrcPort: uint16(33436 + p)}
			rig.mg.SetRoute(ks[p], hopsOf(hA, leaf1, []netip.Addr{sp1, sp2}[i%2], leaf2, dst))
		}
		rig.keys = append(rig.keys, ks)
	}
	for _, name := range []string{"metrics", "delta"} {
		f := &batchForm{name: name}
		if name == "delta" {
			f.sub = rig.mg.SubscribeDeltas(0, 1<<16)
		} else {
			f.sub = rig.mg.SubscribeBatched(0, 1<<16)
		}
		for _, cfg := range aggCfgs {
			g := graph.New(cfg)
			m := newTestMember(b, g)
			m.batched, m.form = true, api.BatchFormMetrics
			if name == "delta" {
				m.form = api.BatchFormDeltas
			}
			m.applySnapshot(*f.sub.Snapshot)
			m.instance, m.lastID, m.synced = "f", f.sub.Snapshot.EventID, true
			f.aggs = append(f.aggs, aggCopy{g, m})
		}
		rig.forms = append(rig.forms, f)
	}
	return rig
}

// cycle is one batch interval (5 s) of samples, one per route per second,
// the route's ports taking turns, 2% lost and half of those resolved
// later; then each form's batch, taken, encoded and applied to its
// aggregator graphs (timed on the first when timed is set).
func (rig *batchRig) cycle(timed bool) {
	const perBatch = 5
	b := rig.b
	for range perBatch {
		for i, ks := range rig.keys {
			rig.seq++
			k := ks[(rig.tick+i)%len(ks)]
			sm := graph.Sample{Seq: rig.seq, Sent: rig.now, Source: "ebpf"}
			switch x := rig.rng.IntN(100); {
			case x < 1:
				sm.Lost = true
				rig.unknown = append(rig.unknown, lostSample{k, rig.now})
			case x < 2:
				sm.Lost, sm.Dir = true, graph.LossForward
			default:
				sm.RTT = time.Duration(80_000 + rig.rng.IntN(30_000) + int(math.Abs(rig.rng.NormFloat64())*10_000))
			}
			rig.mg.AddSample(k, sm)
		}
		rig.now, rig.tick = rig.now.Add(time.Second), rig.tick+1
	}
	for _, l := range rig.unknown {
		rig.mg.AddSample(l.k, graph.Sample{Sent: l.sent, Lost: true, Dir: graph.LossReverse, Resolves: true})
	}
	rig.unknown = rig.unknown[:0]
	rig.mg.Flush()
	_ = rig.mg.Snapshot() // the window metrics both forms start from
	for _, f := range rig.forms {
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
		var t2 time.Duration
		for j, a := range f.aggs {
			if a.m == nil {
				continue
			}
			sse := sseEvent{Name: string(ev.Type), ID: fmt.Sprintf("f-%d", ev.ID), HasID: true, Data: data}
			if reason, err := a.m.apply(sse); reason != "" || err != nil {
				b.Fatalf("%s: apply: %s %v", f.name, reason, err)
			}
			if j == 0 {
				t2 = threadCPU(b)
			}
		}
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

// fill runs cycles until every route's window (and replica) is full:
// 125 samples a route.
func (rig *batchRig) fill() {
	for range 25 {
		rig.cycle(false)
	}
}

// check fails unless every aggregator graph holds the member's metrics
// exactly.
func (rig *batchRig) check() {
	want := rig.mg.Snapshot().Routes
	for _, f := range rig.forms {
		for _, a := range f.aggs {
			got := a.g.Snapshot().Routes
			for i := range want {
				if got[i].ID != want[i].ID || fmt.Sprint(got[i].Metrics) != fmt.Sprint(want[i].Metrics) {
					rig.b.Fatalf("%s: route %s: aggregator %+v, member %+v", f.name, want[i].ID, got[i].Metrics, want[i].Metrics)
				}
			}
		}
	}
}

// drop lets go of f's j-th aggregator graph (and its member state) and
// returns the live heap that freed.
func (rig *batchRig) drop(f *batchForm, j int) float64 {
	before := liveHeap()
	f.aggs[j] = aggCopy{}
	freed := before - liveHeap()
	runtime.KeepAlive(rig.mg)
	return freed
}

// liveHeap is the heap live after a full collection.
func liveHeap() float64 {
	runtime.GC()
	runtime.GC() // and what sync.Pools kept one more cycle
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc)
}

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
