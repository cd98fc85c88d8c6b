package aggregator

import (
	"bufio"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/graph"
)

// portMix is how many of the routes at N = 1,000 have each number of
// source ports: scripts/scale's routesOf over simclos at N = 1,000 with the
// plan's default budget and 11 ports gives 275,250 routes of 704,000 keys
// (2.56 a route), by ports: a route per peer over one path for most
// cross-pod peers, all 11 ports on one path for same-ToR peers.
var portMix = []struct{ ports, routes int }{
	{1, 214305}, {2, 12606}, {3, 4505}, {4, 2933}, {5, 1324}, {6, 441}, {7, 118}, {8, 18}, {11, 39000},
}

// mixedPorts is the ports of each of n routes in portMix's proportions,
// in a fixed shuffled order.
func mixedPorts(n int) []int {
	total := 0
	for _, p := range portMix {
		total += p.routes
	}
	var out []int
	acc := 0
	for _, p := range portMix {
		// cumulative rounding: the counts add up to n
		lo := acc * n / total
		acc += p.routes
		for range acc*n/total - lo {
			out = append(out, p.ports)
		}
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// BenchmarkAggregatorHeapForms measures what the aggregator's graph holds
// per route with each batch form at datacenter scale: 20,000 routes (one
// member) with the port mix of N = 1,000 (portMix), default 100-sample
// windows full, streamed as BenchmarkBatchForms streams them to two
// aggregator graphs per form: one with the default event buffer (4,096
// events) and one with a 1-event buffer, so the event log's part shows.
// It reports, per route, the live heap each aggregator graph (and its
// member state) frees when it goes (heap-B/route: default buffer;
// heap-noevlog-B/route: without the event log; -noview: without the
// snapshot the graph keeps after an API read, snapshot-view-B/route), the
// projection to N = 1,000 (275,250 routes) and N = 3,000 (883k) in MiB
// (the event log a fixed 4,096 events, the rest per route, the snapshot
// view included), and the process's VmRSS and live heap at the end, with
// every graph (and the member's) alive.
//
//	go test -run '^$' -bench AggregatorHeapForms -benchtime 1x ./internal/aggregator
func BenchmarkAggregatorHeapForms(b *testing.B) {
	routes := 20000
	if testing.Short() {
		routes = 2000
	}
	ports := mixedPorts(routes)
	small := graph.DefaultConfig()
	small.EventBuffer = 1
	rig := newBatchRig(b, routes, func(i int) int { return ports[i] }, graph.DefaultConfig(), small)
	keys := 0
	for _, p := range ports {
		keys += p
	}
	rig.fill()
	for b.Loop() {
		rig.cycle(false)
	}
	// check reads each graph's snapshot, which the graph then keeps
	// (SnapshotView's cache, as after any API read) until it changes:
	// the same for both forms, measured apart.
	before := liveHeap()
	rig.check()
	live := liveHeap()
	view := (live - before) / float64(2*len(rig.forms)) / float64(routes)
	b.ReportMetric(view, "snapshot-view-B/route")
	rss := vmRSS(b)
	b.ReportMetric(float64(keys)/float64(routes), "keys/route")
	b.ReportMetric(rss/(1<<20), "process-VmRSS-MiB")
	b.ReportMetric(live/(1<<20), "process-live-heap-MiB")
	per := make(map[string][2]float64)
	for i := len(rig.forms) - 1; i >= 0; i-- {
		f := rig.forms[i]
		noLog := rig.drop(f, 1) / float64(routes)
		withLog := rig.drop(f, 0) / float64(routes)
		per[f.name] = [2]float64{withLog, noLog}
		b.ReportMetric(withLog, f.name+"-heap-B/route")
		b.ReportMetric(noLog, f.name+"-heap-noevlog-B/route")
		b.ReportMetric(noLog-view, f.name+"-heap-noevlog-noview-B/route")
		evlog := (withLog - noLog) * float64(routes)
		for _, n := range []struct {
			name   string
			routes float64
		}{{"N1000", 275250}, {"N3000", 883000}} {
			b.ReportMetric((evlog+noLog*n.routes)/(1<<20), f.name+"-"+n.name+"-MiB")
		}
	}
	b.ReportMetric(per["delta"][1]/per["metrics"][1], "delta/metrics-heap-noevlog")
}

// vmRSS is the process's resident set, bytes (/proc/self/status).
func vmRSS(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
