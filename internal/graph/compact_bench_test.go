package graph

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Imported-route memory benchmark (issue 10, compact storage). Run:
//
//	go test -run '^$' -bench ImportedRouteMemory -benchtime 1x ./internal/graph
//
// It imports the routes an aggregator holds for a 2-tier Clos (every host
// reports routes to every other host, 2 paths per pair with the flow's
// source ports split between them) with hop strings freshly allocated per
// route, as JSON decoding hands them over, and reports the live heap per
// imported route after a GC (B/route) and per key (B/key).

// importFixture is hosts×(hosts−1)×paths routes over a Clos of leaves with
// hostsPerLeaf hosts and spines spines; each route carries ports/paths keys.
type importFixture struct {
	origins []string
	routes  [][]Route // by origin
	keys    int
}

func newImportFixture(leaves, hostsPerLeaf, spines, paths, ports int) *importFixture {
	host := func(l, h int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(l), byte(10 + h)}) }
	leaf := func(l int) string { return fmt.Sprintf("198.19.%d.1", l) }
	spine := func(s int) string { return fmt.Sprintf("198.19.200.%d", s) }
	f := &importFixture{}
	n := leaves * hostsPerLeaf
	for a := 0; a < n; a++ {
		la, ha := a/hostsPerLeaf, a%hostsPerLeaf
		src := host(la, ha)
		origin := src.String()
		f.origins = append(f.origins, origin)
		var rs []Route
		for b := 0; b < n; b++ {
			if b == a {
				continue
			}
			lb, hb := b/hostsPerLeaf, b%hostsPerLeaf
			dst := host(lb, hb)
			for p := 0; p < paths; p++ {
				var hops []string
				if la == lb {
					if p > 0 {
						break
					}
					hops = []string{src.String(), leaf(la), dst.String()}
				} else {
					sp := (a + b + p) % spines
					hops = []string{src.String(), leaf(la), spine(sp), leaf(lb), dst.String()}
				}
				var keys []RouteKey
				for port := p; port < ports; port += paths {
					keys = append(keys, RouteKey{Src: src, Dst: dst, SrcPort: uint16(33434 + port)})
				}
				if la == lb {
					keys = keys[:0]
					for port := 0; port < ports; port++ {
						keys = append(keys, RouteKey{Src: src, Dst: dst, SrcPort: uint16(33434 + port)})
					}
				}
				rtts := make([]float64, len(hops))
				for i := 1; i < len(hops); i++ {
					rtts[i] = 1e-4 * float64(i)
				}
				excess := make([]float64, len(keys))
				rs = append(rs, Route{Src: src, Dst: dst, Hops: hops, Keys: keys, HopRTTs: rtts,
					Metrics: Metrics{Samples: 100, RTTMin: 2e-5, RTTAvg: 3e-5, RTTP50: 3e-5,
						RTTP99: 5e-5, RTTMax: 6e-5, Source: "ebpf", RTTExcessByKey: excess}})
				f.keys += len(keys)
			}
		}
		f.routes = append(f.routes, rs)
	}
	return f
}

// fresh copies r's strings and slices, as a JSON decoder would allocate
// them for every event.
func fresh(r Route) Route {
	c := r
	c.Hops = make([]string, len(r.Hops))
	for i, h := range r.Hops {
		c.Hops[i] = strings.Clone(h)
	}
	c.Keys = append([]RouteKey(nil), r.Keys...)
	c.HopRTTs = append([]float64(nil), r.HopRTTs...)
	c.Metrics.RTTExcessByKey = append([]float64(nil), r.Metrics.RTTExcessByKey...)
	c.ID = strings.Clone(RouteID(r.Hops))
	return c
}

func (f *importFixture) count() int {
	n := 0
	for _, rs := range f.routes {
		n += len(rs)
	}
	return n
}

func heapNow() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkImportedRouteMemory: 16 leaves × 16 hosts (256 agents), 4
// spines, 2 paths per pair, 11 ports: ~130,000 routes of ~5.5 keys.
func BenchmarkImportedRouteMemory(b *testing.B) {
	f := newImportFixture(16, 16, 4, 2, 11)
	routes := f.count()
	var perRoute, perKey float64
	for i := 0; i < b.N; i++ {
		// Each route's strings and slices are fresh, as decoded from a
		// member's stream; the decoded copies are garbage once imported.
		h0 := heapNow()
		g := New(DefaultConfig())
		for o, rs := range f.routes {
			for _, r := range rs {
				g.ImportRoute(f.origins[o], fresh(r))
			}
		}
		h1 := heapNow()
		runtime.KeepAlive(g)
		keepGraph = g
		perRoute = float64(h1-h0) / float64(routes)
		perKey = float64(h1-h0) / float64(f.keys)
	}
	b.ReportMetric(perRoute, "B/route")
	b.ReportMetric(perKey, "B/key")
	b.ReportMetric(float64(routes), "routes")
}

// BenchmarkSnapshotCache compares, on the same aggregator graph in the
// same run, a read of the cached snapshot (SnapshotView, what the API's
// graph, routes and edges handlers now call) with a recompute of it (the
// copy the cache saves, made under the read lock) and with Snapshot (the
// caller's deep copy), and the aggregator /metrics size (Size) with the
// Snapshot the collector used to take. Run:
//
//	go test -run '^$' -bench SnapshotCache -benchtime 20x ./internal/graph
func BenchmarkSnapshotCache(b *testing.B) {
	f := newImportFixture(8, 16, 4, 2, 11) // 128 agents, ~32,000 routes
	g := New(DefaultConfig())
	for o, rs := range f.routes {
		for _, r := range rs {
			g.ImportRoute(f.origins[o], fresh(r))
		}
	}
	g.SnapshotView()
	const reads = 100
	var cached, recompute, deep, size, sizeSnap time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		for range reads {
			if g.SnapshotView() == nil {
				b.Fatal("no view")
			}
		}
		cached += time.Since(t0) / reads
		t0 = time.Now()
		g.mu.RLock()
		s := g.snapshotLocked()
		g.mu.RUnlock()
		recompute += time.Since(t0)
		t0 = time.Now()
		d := g.Snapshot()
		deep += time.Since(t0)
		t0 = time.Now()
		for range reads {
			if g.Size().Routes != len(s.Routes) {
				b.Fatal("size")
			}
		}
		size += time.Since(t0) / reads
		t0 = time.Now()
		if len(g.Snapshot().Routes) != len(d.Routes) {
			b.Fatal("snapshot")
		}
		sizeSnap += time.Since(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(cached.Nanoseconds())/n, "cached-ns")
	b.ReportMetric(float64(recompute.Nanoseconds())/n, "recompute-ns")
	b.ReportMetric(float64(deep.Nanoseconds())/n, "snapshot-ns")
	b.ReportMetric(float64(recompute)/float64(cached), "recompute/cached")
	b.ReportMetric(float64(sizeSnap)/float64(size), "snapshot/size")
	b.ReportMetric(float64(f.count()), "routes")
}

var keepGraph *Graph
