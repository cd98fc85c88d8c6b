package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// TestRestartNoFalseVerdict kill -9's the aggregator (restarted once
// without and once with its -stateDir) and then a plain agent, each
// restarted 2 s later, before memberlist declares it dead. After each
// restart: the aggregator has every member connected again within 5 s (with
// -stateDir it joins the members it knew; without, the member whose probe
// the new process acks joins it), no link is judged faulty at any poll from
// the restart until 2 sweeps (and at least 10 s) later (the pings lost
// while the process was down are not held against the fabric), and then the
// aggregator holds no route that its origin does not have.
func TestRestartNoFalseVerdict(t *testing.T) {
	var useState atomic.Bool
	useState.Store(true)
	stateBase := t.TempDir()
	f, c, fail := startLabClusterWith(t, lab.Config{Spines: 2, Leaves: 2, HostsPerLeaf: 2}, demo.Config{
		Args: []string{"-pingRouteInterval", "200ms", "-mapInterval", "100ms"},
		AgentArgs: func(host string) []string {
			if !useState.Load() {
				return nil
			}
			return []string{"-stateDir", filepath.Join(stateBase, host)}
		},
	})
	ctx := context.Background()
	agg := c.AggregatorHost().Name
	if err := demo.WaitFor(ctx, 60*time.Second, 500*time.Millisecond, c.AllPairsMeasured(10, "")); err != nil {
		fail("mapping: %v", err)
	}
	// A sweep: the slowest agent's last complete one.
	var sweep time.Duration
	if err := demo.WaitFor(ctx, 30*time.Second, 500*time.Millisecond, func() error {
		sweep = 0
		for _, h := range f.Hosts {
			body, err := c.GetRaw(h.Name, "/metrics")
			if err != nil {
				return err
			}
			d := time.Duration(sumSeries(body, "dnms_mapper_sweep_duration_seconds") * float64(time.Second))
			if d == 0 {
				return fmt.Errorf("%s has not completed a sweep", h.Name)
			}
			sweep = max(sweep, d)
		}
		return nil
	}); err != nil {
		fail("sweep: %v", err)
	}
	t.Logf("one sweep takes %s", sweep.Round(time.Millisecond))
	if rows := faultyRows(c); len(rows) > 0 {
		fail("faulty before any restart: %v", rows)
	}

	victim := f.Hosts[len(f.Hosts)-1].Name
	if victim == agg {
		victim = f.Hosts[1].Name
	}
	for _, round := range []struct {
		name  string
		host  string
		state bool
	}{
		{"aggregator without -stateDir", agg, false},
		{"aggregator with -stateDir", agg, true},
		{"agent", victim, true},
	} {
		useState.Store(round.state)
		if err := c.StopAgent(round.host, true); err != nil {
			t.Fatal(err)
		}
		// Down for 2 s (the scenario, not a synchronisation): pings to it
		// are lost, and memberlist has not declared it dead yet.
		time.Sleep(2 * time.Second)
		if err := c.StartAgent(round.host); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		// 2 sweeps, and at least 10 s: long enough for the estimator to
		// judge the losses of the downtime if they were held against a link.
		watchUntil := started.Add(max(2*sweep, 10*time.Second))
		rejoin := time.Duration(-1)
		polls := 0
		var faulty []string
		tick := time.NewTicker(250 * time.Millisecond)
		// Watch for 2 sweeps, and until the members are back (at most 20 s).
		for time.Now().Before(watchUntil) || (rejoin < 0 && time.Since(started) < 20*time.Second) {
			if rejoin < 0 && allMembersConnected(c, agg, f) == nil {
				rejoin = time.Since(started)
			}
			if rows, err := c.Health(); err == nil {
				polls++
				for _, r := range rows {
					if r.Verdict == graph.VerdictFaulty {
						faulty = append(faulty, fmt.Sprintf("%.1fs: %s→%s (%s)", time.Since(started).Seconds(), r.Src, r.Dst, r.Evidence))
					}
				}
			}
			<-tick.C
		}
		tick.Stop()
		if rejoin < 0 {
			fail("%s: members not back within 20 s of the restart: %v", round.name, allMembersConnected(c, agg, f))
		}
		t.Logf("%s: every member connected %s after the restart; %d health polls in %s, none faulty",
			round.name, rejoin.Round(time.Millisecond), polls, time.Since(started).Round(time.Millisecond))
		if rejoin > 5*time.Second {
			fail("%s: members back after %s, want ≤ 5 s", round.name, rejoin)
		}
		if len(faulty) > 0 {
			fail("%s: false faulty verdicts after kill -9 and restart:\n%s", round.name, strings.Join(faulty, "\n"))
		}
		// A second or two of slack for the coalesced route updates.
		if err := demo.WaitFor(ctx, 3*time.Second, 250*time.Millisecond, func() error { return noStaleRoutes(c, agg, f) }); err != nil {
			fail("%s: after 2 sweeps: %v", round.name, err)
		}
	}
}

// faultyRows lists the aggregator's faulty links.
func faultyRows(c *demo.Cluster) []string {
	rows, _ := c.Health()
	var out []string
	for _, r := range rows {
		if r.Verdict == graph.VerdictFaulty {
			out = append(out, r.Src+"→"+r.Dst)
		}
	}
	return out
}

// allMembersConnected: the aggregator streams from every host.
func allMembersConnected(c *demo.Cluster, agg string, f *lab.Fabric) error {
	var ms []aggregator.MemberStatus
	if err := c.Get(agg, "/v1/aggregator/members", &ms); err != nil {
		return err
	}
	state := map[string]string{}
	for _, m := range ms {
		state[m.Name] = m.State
	}
	var missing []string
	for _, h := range f.Hosts {
		if state[h.Name] != "connected" {
			missing = append(missing, fmt.Sprintf("%s (%q)", h.Name, state[h.Name]))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("members not connected: %s", strings.Join(missing, ", "))
	}
	return nil
}

// noStaleRoutes: every route at the aggregator is one its origin has now.
func noStaleRoutes(c *demo.Cluster, agg string, f *lab.Fabric) error {
	rs, err := c.Routes()
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, h := range f.Hosts {
		var own []graph.Route
		if err := c.Get(h.Name, "/v1/graph/routes", &own); err != nil {
			return err
		}
		for _, r := range own {
			have[h.Name+"/"+r.ID] = true
		}
	}
	var stale []string
	for _, r := range rs {
		if !have[r.Origin+"/"+r.ID] {
			stale = append(stale, fmt.Sprintf("%s %s→%s from %s", r.ID, r.Src, r.Dst, r.Origin))
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		return fmt.Errorf("%d of %d routes at the aggregator are not their origin's: %s", len(stale), len(rs), strings.Join(stale, "; "))
	}
	return nil
}
