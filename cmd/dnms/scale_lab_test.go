package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/mapper"
)

// TestScalePingPeers runs 16 agents (2 spines × 4 leaves × 4 hosts) with
// -pingPeers 4: every agent probes 4 peers, its 3 rack peers among them
// (found by the plan's TTL-2 rack probe, not by rotation), the cluster's routes
// still cover every fabric link with at least 3 routes from at least 2
// sources, and 5% loss on one leaf→spine link is the aggregator's top
// faulty row.
func TestScalePingPeers(t *testing.T) {
	f, c, fail := startLabCluster(t, lab.Config{Spines: 2, Leaves: 4, HostsPerLeaf: 4},
		"-pingPeers", "4", "-pingRouteInterval", "200ms", "-mapInterval", "100ms")
	ctx := context.Background()
	agg := c.AggregatorHost().Name

	// Every agent probes 4 peers, its rack peers among them, and says why.
	if err := demo.WaitFor(ctx, 60*time.Second, time.Second, func() error {
		for _, h := range f.Hosts {
			var peers []mapper.PeerStatus
			if err := c.Get(h.Name, "/v1/mapper/peers", &peers); err != nil {
				return err
			}
			if len(peers) != 4 {
				return fmt.Errorf("%s probes %d peers, want 4", h.Name, len(peers))
			}
			rack := 0
			for _, p := range peers {
				if p.Reason == "" {
					return fmt.Errorf("%s: peer %s has no reason", h.Name, p.Peer)
				}
				if p.Reason == "rack" {
					rack++
				}
			}
			if rack != 3 {
				return fmt.Errorf("%s probes %d of its 3 rack peers: %+v", h.Name, rack, peers)
			}
		}
		return nil
	}); err != nil {
		fail("plan: %v", err)
	}

	// Every fabric link (host↔leaf, leaf↔spine, both directions) is covered.
	addr := map[string]string{}
	for _, r := range f.Routers {
		addr[r.Name] = r.Loopback.String()
	}
	for _, h := range f.Hosts {
		addr[h.Name] = h.Addr.String()
	}
	var want []graph.LinkID
	for _, l := range f.Links {
		a, b := addr[l.A.Node], addr[l.B.Node]
		want = append(want, graph.LinkID{Src: a, Dst: b}, graph.LinkID{Src: b, Dst: a})
	}
	start := time.Now()
	if err := demo.WaitFor(ctx, 120*time.Second, 2*time.Second, func() error {
		var edges []struct {
			graph.LinkID
			Routes  int `json:"routes"`
			Sources int `json:"sources"`
		}
		if err := c.Get(agg, "/v1/aggregator/graph/edges", &edges); err != nil {
			return err
		}
		got := map[graph.LinkID][2]int{}
		for _, e := range edges {
			got[e.LinkID] = [2]int{e.Routes, e.Sources}
		}
		var missing []string
		for _, l := range want {
			if g := got[l]; g[0] < 3 || g[1] < 2 {
				missing = append(missing, fmt.Sprintf("%s→%s (%d routes, %d sources)", l.Src, l.Dst, g[0], g[1]))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d fabric links not covered by ≥ 3 routes from ≥ 2 sources: %s",
				len(missing), len(want), strings.Join(missing, ", "))
		}
		return nil
	}); err != nil {
		fail("coverage: %v", err)
	}
	t.Logf("all %d directed fabric links covered after %s", len(want), time.Since(start).Round(time.Second))

	leaf1, spine1 := router(t, f, "leaf", 0), router(t, f, "spine", 0)
	if err := f.SetLoss(f.LinkBetween(leaf1.Name, spine1.Name), leaf1.Name, 5); err != nil {
		t.Fatal(err)
	}
	target := graph.LinkID{Src: leaf1.Loopback.String(), Dst: spine1.Loopback.String()}
	faultAt := time.Now()
	if err := demo.WaitFor(ctx, 90*time.Second, time.Second, func() error {
		rows, err := c.Health()
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("no health rows")
		}
		if top := rows[0]; top.Src != target.Src || top.Dst != target.Dst || top.Verdict != graph.VerdictFaulty {
			return fmt.Errorf("top row %s→%s %s (%s), want %s→%s faulty", top.Src, top.Dst, top.Verdict, top.Evidence, target.Src, target.Dst)
		}
		return nil
	}); err != nil {
		fail("5%% loss on %s→%s: %v", leaf1.Name, spine1.Name, err)
	}
	t.Logf("5%% loss on %s→%s is the top faulty row after %s", leaf1.Name, spine1.Name, time.Since(faultAt).Round(time.Second))
}

// startLabCluster builds a lab fabric (root only; a unique prefix) and runs
// the dnms binary with args on every host, one aggregating. fail ends the
// test with the aggregator's log tail.
func startLabCluster(t testing.TB, cfg lab.Config, args ...string) (*lab.Fabric, *demo.Cluster, func(format string, a ...any)) {
	t.Helper()
	return startLabClusterWith(t, cfg, demo.Config{Args: args})
}

// startLabClusterWith is startLabCluster with more demo settings (dc's
// Fabric and LogDir are filled in, and Binary when empty).
func startLabClusterWith(t testing.TB, cfg lab.Config, dc demo.Config) (*lab.Fabric, *demo.Cluster, func(format string, a ...any)) {
	t.Helper()
	lab.RequireRoot(t)
	if dc.Binary == "" {
		dc.Binary = buildDNMS(t)
	}
	cfg.Prefix = lab.UniquePrefix(t)
	f := lab.New(t, cfg)
	dc.Fabric, dc.LogDir = f, t.TempDir()
	c, err := demo.Start(dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	agg := c.AggregatorHost().Name
	return f, c, func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s\n--- aggregator %s log tail:\n%s", fmt.Sprintf(format, a...), agg, c.Tail(agg, 30))
	}
}
