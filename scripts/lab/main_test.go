package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/lab"
)

// TestCLI drives up, truth, fault and down as a user would (in-process).
func TestCLI(t *testing.T) {
	lab.RequireRoot(t)
	p := lab.UniquePrefix(t)
	t.Cleanup(func() { lab.Destroy(p) })
	if err := up([]string{"-prefix", p, "-spines", "2", "-leaves", "2", "-hosts", "1"}); err != nil {
		t.Fatal(err)
	}
	if err := truth([]string{"-prefix", p}); err != nil {
		t.Fatal(err)
	}
	cfg, err := lab.Discover(p)
	if err != nil || cfg != (lab.Config{Prefix: p, Spines: 2, Leaves: 2, HostsPerLeaf: 1}) {
		t.Fatalf("discover: %+v, %v", cfg, err)
	}
	if err := fault([]string{"-prefix", p, "-link", "leaf1-spine1", "-from", "spine1", "-loss", "100"}); err != nil {
		t.Fatal(err)
	}
	// Loss sits on the sender's egress: spine1's interface towards leaf1.
	out, err := exec.Command("ip", "netns", "exec", p+"-spine1", "nft", "list", "ruleset").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `device "leaf1"`) || !strings.Contains(string(out), "drop") {
		t.Fatalf("after fault -loss: spine1 ruleset %s (err %v)", out, err)
	}
	if err := fault([]string{"-prefix", p, "-link", "leaf1-spine1", "-clear"}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"-spine1", "-leaf1"} {
		out, err = exec.Command("ip", "netns", "exec", p+ns, "nft", "list", "ruleset").CombinedOutput()
		if err != nil || strings.Contains(string(out), "dnmslab") {
			t.Fatalf("after fault -clear: %s ruleset %s (err %v)", ns, out, err)
		}
	}
	if err := fault([]string{"-prefix", p, "-link", "nosuch"}); err == nil {
		t.Fatal("fault on unknown link: no error")
	}
	if err := down([]string{"-prefix", p}); err != nil {
		t.Fatal(err)
	}
	if left, err := lab.LeftoverNamespaces(p); err != nil || len(left) > 0 {
		t.Fatalf("after down: %v (err %v)", left, err)
	}
}
