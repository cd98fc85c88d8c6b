package mapper

import (
	"net/netip"
	"testing"
)

// RoutesTo lists, per source port, the route id the route map holds towards
// one peer, and says when the peer is not traced at all.
func TestRoutesTo(t *testing.T) {
	cfg := testConfig(3)
	cfg.Jitter = 0
	tr := &fakeTracer{}
	m, _ := newTestMapper(t, cfg, tr, newFakeSink())
	m.AddPeer(peerA)
	runFor(t, m, tr, 3)

	want := map[uint16]string{}
	for _, e := range m.RouteMap() {
		if e.Dst == peerA {
			want[e.SrcPort] = e.RouteID
		}
	}
	if len(want) == 0 {
		t.Fatal("no route to peerA after 3 traces")
	}
	// An IPv4-mapped address names the same peer.
	got := m.RoutesTo(netip.AddrFrom16(peerA.As16()))
	if !got.Traced || got.Peer != peerA {
		t.Fatalf("RoutesTo(peerA) = %+v, want traced peer %s", got, peerA)
	}
	if len(got.Ports) != len(want) {
		t.Fatalf("RoutesTo(peerA) lists %d ports, the route map %d", len(got.Ports), len(want))
	}
	for i, p := range got.Ports {
		if i > 0 && got.Ports[i-1].SrcPort >= p.SrcPort {
			t.Errorf("ports not sorted: %+v", got.Ports)
		}
		if want[p.SrcPort] != p.RouteID || p.RouteID == "" {
			t.Errorf("port %d: route %q, route map %q", p.SrcPort, p.RouteID, want[p.SrcPort])
		}
	}

	if got := m.RoutesTo(peerB); got.Traced || got.Ports == nil || len(got.Ports) != 0 {
		t.Errorf("RoutesTo(untraced peer) = %+v, want not traced and an empty list", got)
	}
}
