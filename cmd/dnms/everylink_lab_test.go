package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// TestLocalizeEveryLink puts 20% loss on one direction of one link at a
// time (on the sender's egress, where the packet is still on the wire) and
// waits until the aggregator calls that link direction, and only it,
// faulty; then clears it and waits until nothing is faulty. It runs once
// per time source (ebpf, kernel, user), each with its own cluster.
//
// CI covers every kind of link direction (host→leaf, leaf→host,
// leaf→spine, spine→leaf) of one leaf and one spine with every source;
// the fabric is symmetric, so the other links differ only in names.
// DNMS_LAB_EVERY_LINK=all sweeps every link direction of the fabric (18)
// with every source (make bench, section lab); DNMS_LAB_SOURCES narrows
// the sources (comma-separated).
func TestLocalizeEveryLink(t *testing.T) {
	lab.RequireRoot(t)
	bin := buildDNMS(t)
	sources := []string{"ebpf", "kernel", "user"}
	if s := os.Getenv("DNMS_LAB_SOURCES"); s != "" {
		sources = strings.Split(s, ",")
	}
	all := os.Getenv("DNMS_LAB_EVERY_LINK") == "all"
	var table []string
	for _, src := range sources {
		t.Run(src, func(t *testing.T) {
			rows := sweepLinks(t, bin, src, all)
			table = append(table, rows...)
		})
	}
	t.Logf("detection and clearing per link direction (20%% loss, 100 ms per route, ring 50 = 5 s):\n%-8s %-40s %8s %8s\n%s",
		"source", "link", "detect", "clear", strings.Join(table, "\n"))
}

// sweepLinks runs the fault cycle on the fabric's link directions with
// time source src and returns one table row per direction.
func sweepLinks(t *testing.T, bin, src string, all bool) []string {
	const interval, ring = 100 * time.Millisecond, 50
	f, c, fail := startLabClusterWith(t, lab.Config{Spines: 2, Leaves: 3, HostsPerLeaf: 1}, demo.Config{Binary: bin,
		Args: []string{"-timestamps", src, "-pingRouteInterval", interval.String(), "-mapInterval", "100ms", "-metricRingSize", fmt.Sprint(ring),
			// Pings are 10× the default pace, so is the aggregation.
			"-aggregateInterval", "500ms"}})
	if err := demo.WaitFor(context.Background(), 120*time.Second, time.Second, c.AllPairsMeasured(ring, graph.TimeSource(src))); err != nil {
		fail("warm-up: %v", err)
	}
	id := func(node string) string {
		for _, h := range f.Hosts {
			if h.Name == node {
				return h.Addr.String()
			}
		}
		return f.Router(node).Loopback.String()
	}
	leaf1, spine1 := router(t, f, "leaf", 0), router(t, f, "spine", 0)
	var rows []string
	for _, l := range f.Links {
		if !all && l.B.Node != leaf1.Name && l.B.Node != spine1.Name {
			continue
		}
		if !all && l.B.Node == spine1.Name && l.A.Node != leaf1.Name {
			continue
		}
		for _, from := range []lab.Endpoint{l.A, l.B} {
			to := l.B
			if from.Node == l.B.Node {
				to = l.A
			}
			want := id(from.Node) + "→" + id(to.Node)
			name := from.Node + "→" + to.Node
			set := time.Now()
			if err := f.SetLoss(l, from.Node, 20); err != nil {
				t.Fatal(err)
			}
			cleared := false
			t.Cleanup(func() {
				if !cleared {
					f.ClearFaults(l)
				}
			})
			detect := time.Since(set) // setting the fault, then the wait
			detect += waitVerdicts(t, c, 30*time.Second, graph.VerdictFaulty, want, false)
			cleared = true
			if err := f.ClearFaults(l); err != nil {
				t.Fatal(err)
			}
			clear := waitVerdicts(t, c, time.Duration(ring)*interval+15*time.Second, graph.VerdictFaulty, "", false)
			rows = append(rows, fmt.Sprintf("%-8s %-40s %8s %8s", src, name+" ("+want+")",
				detect.Round(100*time.Millisecond), clear.Round(100*time.Millisecond)))
			t.Logf("%s: %s the only faulty link after %s, cleared after %s", src, name, detect.Round(time.Millisecond), clear.Round(time.Millisecond))
		}
	}
	return rows
}
