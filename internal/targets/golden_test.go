package targets

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/probe"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// golden compares v's indented JSON with testdata/name (the web UI and
// docs/api.md depend on these shapes).
func golden(t *testing.T, name string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	p := "testdata/" + name
	if *update {
		os.WriteFile(p, b, 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if string(want) != string(b) {
		t.Fatalf("%s differs; got:\n%s", p, b)
	}
}

func TestTargetJSONGolden(t *testing.T) {
	addr := netip.MustParseAddr("198.18.2.1")
	st := newAddrStats(8)
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for i, rtt := range []float64{0.0001, 0.0002, 0, 0.0004} {
		s := Sample{Addr: addr, Time: t0.Add(time.Duration(i) * time.Second), SrcPort: 40001, Seq: uint64(i + 1),
			RTT: rtt, Reply: probe.ReplySynAck, Source: probe.SourceKernel}
		if rtt == 0 {
			s.Lost, s.Reply, s.Source = true, probe.ReplyTimeout, probe.SourceUser
		}
		st.add(s)
	}
	as := st.status(addr)
	as.Paths = []FlowPath{{SrcPort: 33436, Hops: []netip.Addr{netip.MustParseAddr("198.19.1.10"), netip.MustParseAddr("198.18.1.1"), addr}}}
	d := Detail{Status: Status{Name: "web", Host: "web.example", Probe: probe.KindTCP, Port: 8080, Flows: 1, Trace: true,
		IntervalSeconds: 1, TimeoutSeconds: 1, TraceIntervalSeconds: 10, Addrs: []AddrStatus{as}}, Samples: st.samples()}
	golden(t, "target.golden.json", d)
}
