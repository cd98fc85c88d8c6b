package lab

import (
	"fmt"
	"regexp"
	"slices"
	"testing"
)

// TestDualHomedPlan: dual-homed hosts are additive (the default fabric does
// not change) and their ground truth enters through either leaf.
func TestDualHomedPlan(t *testing.T) {
	base, err := plan(Config{Prefix: "p", Spines: 2, Leaves: 3, HostsPerLeaf: 1})
	if err != nil {
		t.Fatal(err)
	}
	dual, err := plan(Config{Prefix: "p", Spines: 2, Leaves: 3, HostsPerLeaf: 1, DualHomed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(dual.Hosts) != len(base.Hosts)+1 || len(dual.Links) != len(base.Links)+2 {
		t.Fatalf("dual-homed host adds %d hosts and %d links, want 1 and 2", len(dual.Hosts)-len(base.Hosts), len(dual.Links)-len(base.Links))
	}
	d, _ := dual.host("dual1")
	if d.Addr.String() != "198.18.2.1" || !slices.Equal(d.Leaves, []string{"leaf1", "leaf2"}) {
		t.Fatalf("dual1 %+v", d)
	}
	for _, p := range dual.groundTruth().Pairs {
		if p.Src == "host3" && p.Dst == "dual1" && len(p.Paths) != 4 { // 2 spines × 2 leaves
			t.Errorf("host3→dual1 paths %v, want 4", p.Paths)
		}
		if p.Src == "dual1" && p.Dst == "host1" && len(p.Paths) != 3 { // leaf1 direct, leaf2 via 2 spines
			t.Errorf("dual1→host1 paths %v, want 3", p.Paths)
		}
	}
	if _, err := plan(Config{Prefix: "p", Spines: 1, Leaves: 1, HostsPerLeaf: 1, DualHomed: 1}); err == nil {
		t.Error("a dual-homed host with one leaf was accepted")
	}
}

var routeDev = regexp.MustCompile(` dev (\S+)`)

// dualUplinks returns the uplinks `ip route get` picks for UDP flows from
// dual to dst on source ports 40000..40031.
func dualUplinks(t *testing.T, f *Fabric, dual Host, dst string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for sport := 40000; sport < 40032; sport++ {
		b, err := f.Exec(dual.NS, "ip", "route", "get", dst, "from", dual.Addr.String(), "ipproto", "udp",
			"sport", fmt.Sprint(sport), "dport", "33435")
		if err != nil {
			t.Fatalf("ip route get: %v: %s", err, b)
		}
		m := routeDev.FindSubmatch(b)
		if m == nil {
			t.Fatalf("ip route get: no dev in %q", b)
		}
		out[string(m[1])]++
	}
	return out
}

// TestDualHomed: a host wired to two leaves, addressed on lo, is reached
// from both leaves' hosts, spreads its flows over both uplinks, and keeps
// working on one when the other goes down.
func TestDualHomed(t *testing.T) {
	f := New(t, Config{Spines: 2, Leaves: 2, HostsPerLeaf: 1, DualHomed: 1})
	d := f.Host("dual1")
	for _, h := range []string{"host1", "host2"} {
		if b, err := f.Exec(h, "ping", "-c", "1", "-W", "2", d.Addr.String()); err != nil {
			t.Fatalf("%s cannot reach dual1 (%s): %v\n%s", h, d.Addr, err, b)
		}
	}
	host2 := f.Host("host2").Addr.String()
	if got := dualUplinks(t, f, d, host2); got["eth0"] == 0 || got["eth1"] == 0 {
		t.Errorf("32 flows leave by %v, want both uplinks", got)
	}
	up := f.LinkBetween("dual1", "leaf1")
	if err := f.SetDown(up, true); err != nil {
		t.Fatal(err)
	}
	if got := dualUplinks(t, f, d, host2); got["eth1"] != 32 {
		t.Errorf("eth0 down: 32 flows leave by %v, want all on eth1", got)
	}
	if b, err := f.Exec("host1", "ping", "-c", "1", "-W", "2", d.Addr.String()); err != nil {
		t.Errorf("eth0 down: host1 cannot reach dual1: %v\n%s", err, b)
	}
	if err := f.SetDown(up, false); err != nil {
		t.Fatal(err)
	}
	if got := dualUplinks(t, f, d, host2); got["eth0"] == 0 {
		t.Errorf("eth0 up again: 32 flows leave by %v, want some on eth0", got)
	}
}
