package aggregator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/graph"
)

func newTestMember(tb testing.TB, g *graph.Graph) *member {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Logger = testLogger()
	a, err := New(cfg, g)
	if err != nil {
		tb.Fatal(err)
	}
	return newMember(a, "m", "http://127.0.0.1:1")
}

// FuzzStream feeds arbitrary bytes through the SSE parser into a member's
// event handling and a real graph: nothing may panic, and whatever the
// member believes it imported must be what the graph holds for it.
func FuzzStream(f *testing.F) {
	r := route(33436, 0.1, leaf1, sp1, leaf2)
	s, _ := json.Marshal(graph.Snapshot{EventID: 3, Routes: []graph.Route{r}})
	e, _ := json.Marshal(graph.Event{Type: graph.EventRouteAdd, Route: &rSp2})
	rm, _ := json.Marshal(graph.Event{Type: graph.EventRouteRemove, Route: &r})
	f.Add([]byte(fmt.Sprintf("event: snapshot\nid: f-3\ndata: %s\n\nevent: route-add\nid: f-4\ndata: %s\n\nevent: route-remove\nid: g-5\ndata: %s\n\n", s, e, rm)))
	f.Add([]byte("event: route-update\nid: f-1\ndata: {\"route\":{\"hops\":[\"a\",\"b\"],\"keys\":[{}]}}\n\n"))
	f.Add([]byte("event: snapshot\nid: x-0\ndata: {\"routes\":[{\"hops\":[\"x\"]},{\"hops\":[\"*\",\"*\"],\"keys\":[{\"srcPort\":1}]}]}\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := graph.New(graph.DefaultConfig())
		feedStream(t, g, newTestMember(t, g), b, 4096)
	})
}

// feedStream runs b through the SSE parser (lines up to maxLine) into m,
// a member importing into g, taking a fresh snapshot where the stream
// would; then g must hold what m believes it imported, and encode.
func feedStream(t *testing.T, g *graph.Graph, m *member, b []byte, maxLine int) {
	t.Helper()
	rd := newSSEReader(bytes.NewReader(b), maxLine)
	for {
		ev, err := rd.Next()
		if err != nil {
			if err != io.EOF {
				t.Fatalf("reader: %v", err)
			}
			break
		}
		if reason, _ := m.apply(ev); reason != "" {
			m.lastID, m.synced = 0, false
		}
	}
	s := g.Snapshot()
	if _, err := json.Marshal(s); err != nil {
		t.Fatalf("the graph does not encode: %v", err)
	}
	held := 0
	for _, r := range s.Routes {
		if r.Origin == "m" {
			held += len(r.Keys)
		}
	}
	if held != len(m.keys) {
		t.Fatalf("graph holds %d keys for the member, member tracks %d", held, len(m.keys))
	}
}

func benchSnapshot(n int) graph.Snapshot {
	s := graph.Snapshot{EventID: uint64(n)}
	for i := range n {
		dst := netip.AddrFrom4([4]byte{198, 19, byte(i / 250), byte(1 + i%250)})
		hops := []string{hA.String(), leaf1.String(), []string{sp1.String(), sp2.String()}[i%2], leaf2.String(), dst.String()}
		s.Routes = append(s.Routes, graph.Route{
			ID: graph.RouteID(hops), Src: hA, Dst: dst, Hops: hops,
			Keys:    []graph.RouteKey{{Src: hA, Dst: dst, SrcPort: uint16(33436 + i%2)}},
			Metrics: graph.Metrics{Samples: 100, Loss: 0.01, RTTAvg: 0.0002, Source: "ebpf"},
		})
	}
	return s
}

// BenchmarkApplySnapshot measures decoding and importing one member's
// snapshot of 1000 routes into an aggregator graph that already holds them
// (the reconnect case).
func BenchmarkApplySnapshot(b *testing.B) {
	s := benchSnapshot(1000)
	data, _ := json.Marshal(s)
	g := graph.New(graph.DefaultConfig())
	m := newTestMember(b, g)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var snap graph.Snapshot
		if err := json.Unmarshal(data, &snap); err != nil {
			b.Fatal(err)
		}
		m.applySnapshot(snap)
	}
	b.ReportMetric(float64(len(data)), "snapshot-bytes")
}

// BenchmarkSSEParse measures the SSE parser on a stream of route-update
// events as the api sends them.
func BenchmarkSSEParse(b *testing.B) {
	r := rSp2
	e, _ := json.Marshal(graph.Event{ID: 12345, Type: graph.EventRouteUpdate, Route: &r})
	one := fmt.Sprintf("event: route-update\nid: 12345\ndata: %s\n\n", e)
	stream := strings.Repeat(one, 1000)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		rd := newSSEReader(strings.NewReader(stream), 1<<20)
		n := 0
		for {
			if _, err := rd.Next(); err != nil {
				break
			}
			n++
		}
		if n != 1000 {
			b.Fatalf("parsed %d events", n)
		}
	}
}
