package localize

import (
	"fmt"
	"slices"
	"testing"
)

// downedLinkLab is the lab fabric of TestLocalizeHardAndSlow/link-down at
// the moment it failed (routes and ports as dumped there): 2 spines, 3
// leaves, one host each; the leaf1–spine1 link is down, so spine1→leaf1
// black-holes what the other leaves still hash to it. The members whose
// streams the fault cut are stale: their routes are known (they are the
// reverse paths of host1's acks) but carry no samples. host1's routes lost
// exactly the keys whose acks come back through spine1, and no ack with
// the reflector's counters came back on those keys, so no loss has a
// known direction. Some of host1's forward hop lists still go through
// spine1: the retrace needs the trace-ack, which the dead link drops.
func downedLinkLab(perKey bool) []Input {
	const (
		h1, h2, h3 = "198.19.1.10", "198.19.2.10", "198.19.3.10"
		l1, l2, l3 = "198.18.1.1", "198.18.1.2", "198.18.1.3"
		s1, s2     = "198.18.0.1", "198.18.0.2"
	)
	type route struct {
		src, leafA, spine, leafB, dst string
		ports                         []uint16
	}
	rs := []route{
		{h1, l1, s2, l2, h2, []uint16{36, 37, 39, 41, 44, 45, 46}},
		{h1, l1, s1, l2, h2, []uint16{38, 40, 42, 43}},
		{h1, l1, s2, l3, h3, []uint16{36, 37, 38, 39, 41, 43, 44, 45, 46}},
		{h1, l1, s1, l3, h3, []uint16{40, 42}},
		{h2, l2, s2, l1, h1, []uint16{36, 37, 39, 41, 43, 45, 46}},
		{h2, l2, s1, l1, h1, []uint16{38, 40, 42, 44}},
		{h2, l2, s2, l3, h3, []uint16{38, 40, 41, 44, 45}},
		{h2, l2, s1, l3, h3, []uint16{36, 37, 39, 42, 43, 46}},
		{h3, l3, s2, l1, h1, []uint16{37, 38, 42, 44, 46}},
		{h3, l3, s1, l1, h1, []uint16{36, 39, 40, 41, 43, 45}},
		{h3, l3, s1, l2, h2, []uint16{39, 40, 41, 42, 43, 45, 46}},
		{h3, l3, s2, l2, h2, []uint16{36, 37, 38, 44}},
	}
	// revSpine is the spine the ack of (src→dst, port) crosses.
	revSpine := func(src, dst string, port uint16) string {
		for _, r := range rs {
			if r.src == dst && r.dst == src && slices.Contains(r.ports, port) {
				return r.spine
			}
		}
		panic(fmt.Sprintf("no reverse route for %s→%s port %d", src, dst, port))
	}
	const perPort, lostPerPort = 100, 60 // 60% of the window after the fault
	var in []Input
	for _, r := range rs {
		x := Input{Hops: []string{r.src, r.leafA, r.spine, r.leafB, r.dst}, Ports: r.ports}
		if r.src == h1 { // the only member still streaming
			for _, p := range r.ports {
				lost := 0
				if revSpine(r.src, r.dst, p) == s1 {
					lost = lostPerPort
				}
				x.Samples += perPort
				x.Lost += lost
				x.SamplesByKey = append(x.SamplesByKey, perPort)
				x.LostByKey = append(x.LostByKey, lost)
			}
			if !perKey {
				x.SamplesByKey, x.LostByKey = nil, nil
			}
		}
		in = append(in, x)
	}
	return in
}

// TestRoundTripsByKey: with each key's counts the black-holed acks are put
// on their own reverse path, and the dead direction is the only faulty
// link; with the route's totals alone (spread over the reverse paths),
// the same data blames other links too, so the test can tell.
func TestRoundTripsByKey(t *testing.T) {
	faulty := func(rows []Row) []string {
		var out []string
		for _, r := range rows {
			if r.Verdict == VerdictFaulty {
				out = append(out, r.Src+"→"+r.Dst)
			}
		}
		return out
	}
	const dead = "198.18.0.1→198.18.1.1"
	got := faulty(Run(downedLinkLab(true), DefaultConfig()))
	if len(got) != 1 || got[0] != dead {
		t.Errorf("per-key counts: faulty %v, want [%s]", got, dead)
	}
	if got := faulty(Run(downedLinkLab(false), DefaultConfig())); len(got) == 1 && got[0] == dead {
		t.Logf("route totals alone also found it: the scenario no longer shows what per-key counts add")
	} else {
		t.Logf("route totals alone: faulty %v", got)
	}
}
