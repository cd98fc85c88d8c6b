package main

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/lab"
)

// TestEndToEndKeyed runs the real binary with only -gossipKey set, as
// docs/security.md recommends: the probe key is derived from it, the
// keyed kernel reflector answers members' pings after userspace confirmed
// each flow's epoch, and the aggregator streams from every member it trusts.
func TestEndToEndKeyed(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	f, c, _ := startLabCluster(t, lab.Config{Spines: 2, Leaves: 2, HostsPerLeaf: 1},
		"-pingRouteInterval", "200ms", "-mapInterval", "100ms", "-gossipKey", key)
	agg := c.AggregatorHost().Name
	err := demo.WaitFor(context.Background(), 90*time.Second, time.Second, c.AllPairsMeasured(10, ""))
	if err != nil {
		t.Fatalf("keyed cluster: %v\n%s", err, c.Tail(agg, 30))
	}
	var members []aggregator.MemberStatus
	if err := c.Get(agg, "/v1/aggregator/members", &members); err != nil {
		t.Fatal(err)
	}
	if len(members) != len(f.Hosts) {
		t.Fatalf("%d members at the aggregator, want %d: %+v", len(members), len(f.Hosts), members)
	}
	for _, m := range members {
		if m.State != "connected" || m.Stale {
			t.Errorf("member %+v", m)
		}
	}
	for _, h := range f.Hosts {
		body, err := c.GetRaw(h.Name, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		refl, declined := sumSeries(body, "dnms_ebpf_reflected_total"), sumSeries(body, "dnms_ebpf_reflector_declined_total")
		t.Logf("%s: kernel reflected %v, left to userspace %v", h.Name, refl, declined)
		if refl == 0 || declined == 0 {
			t.Errorf("%s: keyed kernel reflector reflected %v and declined %v; want both (first ping of a flow via userspace)", h.Name, refl, declined)
		}
		if sumSeries(body, `dnms_packets_rejected_total{reason="hmac"}`) != 0 {
			t.Errorf("%s: genuine probes rejected for their HMAC", h.Name)
		}
	}
}
