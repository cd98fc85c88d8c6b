package graph

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkAgentFlows is one agent's graph at the scale of issue 10: 64
// peers × 11 source ports (704 keys) over 4 ECMP routes per peer, every
// key pinged once a (simulated) second, a Flush a second (one
// route-update per route, with its metrics). After 150 s (every window
// full), it reports the live heap per key and the CPU of one simulated
// second (704 AddSample calls and the Flush). It uses only the exported
// API, so the same file measures the 100-sample rings at 85a8162:
//
//	go test -run '^$' -bench AgentFlows -benchtime 20x ./internal/graph
func BenchmarkAgentFlows(b *testing.B) {
	const peers, ports, paths, warm = 64, 11, 4, 150
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Now = clk.Now
	cfg.EventBuffer = 16 // the replay buffer's route copies are not flow state
	src := "198.18.0.1"
	var keys []RouteKey
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	g := New(cfg)
	for p := range peers {
		dst := fmt.Sprintf("198.18.%d.%d", 1+p/200, 2+p%200)
		for q := range ports {
			k := key(src, dst, uint16(40000+q))
			spine := fmt.Sprintf("198.19.0.%d", 1+q%paths)
			g.SetRoute(k, hops(src, "198.19.1.1", spine, "198.19.2.1", dst))
			keys = append(keys, k)
		}
	}
	seq := uint64(0)
	second := func() {
		for i, k := range keys {
			seq++
			s := Sample{Seq: seq, Sent: clk.Now().Add(time.Duration(i) * time.Millisecond),
				RTT: time.Duration(40_000 + (seq*7919)%17_000), Source: "ebpf"}
			if seq%97 == 0 {
				s = Sample{Seq: seq, Sent: s.Sent, Lost: true, Dir: LossForward, Source: "ebpf"}
			}
			g.AddSample(k, s)
		}
		clk.Advance(time.Second)
		g.Flush()
	}
	for range warm {
		second()
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	heap := float64(ms1.HeapAlloc) - float64(ms0.HeapAlloc)
	for b.Loop() {
		second()
	}
	runtime.KeepAlive(g)
	b.ReportMetric(heap/float64(len(keys)), "heap-B/key")
	b.ReportMetric(float64(len(keys)), "keys")
	b.ReportMetric(float64(len(g.Snapshot().Routes)), "routes")
}
