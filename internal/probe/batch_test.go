package probe

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// PingBatch sends every flow's ping (several per port, more than one
// sendmmsg's worth on one port), each gets its own seq and comes back acked
// with sane stamps; a flow outside the range is refused without stopping
// the others.
func TestEnginePingBatch(t *testing.T) {
	for _, src := range []Source{SourceUser, SourceKernel} {
		t.Run(string(src), func(t *testing.T) {
			a, b := startPair(t, func(c *Config) { c.Timestamps = string(src) })
			peer := b.LocalAddr()
			warm := warmUp(t, a.Engine, peer, src)
			var flows []FlowKey
			for i := range 8 * 3 {
				flows = append(flows, FlowKey{Peer: peer, SrcPort: a.cfg.SrcPortStart + uint16(i%8)})
			}
			for range sendBatchLen + 6 { // over one sendmmsg on the first port
				flows = append(flows, FlowKey{Peer: peer, SrcPort: a.cfg.SrcPortStart})
			}
			n := len(flows)
			flows = append(flows, FlowKey{Peer: peer, SrcPort: a.cfg.SrcPortEnd + 1})
			if err := a.PingBatch(flows); err == nil {
				t.Fatal("a flow outside the source range was accepted")
			}
			rs := collect(t, a.Engine, n, 10*time.Second)
			seen := map[FlowKey]map[uint64]bool{}
			for _, r := range rs {
				if r.Lost || r.RTT <= 0 || r.T2 == 0 || r.T4 <= r.T1 {
					t.Fatalf("bad result: %+v", r)
				}
				k := FlowKey{Peer: r.Peer, SrcPort: r.SrcPort}
				if seen[k] == nil {
					seen[k] = map[uint64]bool{}
				}
				if seen[k][r.Seq] {
					t.Fatalf("seq %d twice on %v", r.Seq, k)
				}
				seen[k][r.Seq] = true
			}
			if got := len(seen[FlowKey{Peer: peer, SrcPort: a.cfg.SrcPortStart}]); got != 3+sendBatchLen+6 {
				t.Errorf("first port: %d distinct acked seqs, want %d", got, 3+sendBatchLen+6)
			}
			if got := testutil.ToFloat64(a.met.pingsSent); got != float64(n)+warm {
				t.Errorf("pings sent %v, want %v", got, float64(n)+warm)
			}
		})
	}
}

// A batch whose sends fail comes back as lost results, one per ping.
func TestEnginePingBatchSendFailure(t *testing.T) {
	a, _ := startPair(t, nil)
	// An IPv6 peer on the IPv4 sockets: sendmmsg refuses it on any host and
	// nothing leaves.
	peer := netip.MustParseAddr("fd00::1")
	flows := []FlowKey{{Peer: peer, SrcPort: a.cfg.SrcPortStart}, {Peer: peer, SrcPort: a.cfg.SrcPortStart}}
	if err := a.PingBatch(flows); err == nil {
		t.Fatal("no error for an unsendable batch")
	}
	for _, r := range collect(t, a.Engine, 2, 5*time.Second) {
		if !r.Lost || r.Peer != peer {
			t.Fatalf("want a lost result for %v: %+v", peer, r)
		}
	}
}
