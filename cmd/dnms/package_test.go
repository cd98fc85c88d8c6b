package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/lab"
)

// TestDebPackage builds the .deb (scripts/package.sh, what make package
// runs), installs it with dpkg -i, runs dnms -version from it, checks the
// unit, config and /etc/default file are in place, and purges it: nothing
// of it may remain.
func TestDebPackage(t *testing.T) {
	lab.RequireRoot(t) // installs into this machine's root file system
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed: not a Debian system")
	}
	if exec.Command("dpkg", "-s", "dnms").Run() == nil {
		t.Skip("a dnms package is already installed here; not touching it")
	}
	out := t.TempDir()
	if b, err := exec.Command("../../scripts/package.sh", out).CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "dnms_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("package.sh made %v, want one dnms_*.deb", debs)
	}
	files := []string{"/usr/bin/dnms", "/lib/systemd/system/dnms.service", "/etc/dnms/dnms.yaml", "/etc/default/dnms"}
	t.Cleanup(func() {
		if b, err := exec.Command("dpkg", "-P", "dnms").CombinedOutput(); err != nil {
			t.Errorf("dpkg -P dnms: %v\n%s", err, b)
		}
		for _, f := range files {
			if _, err := os.Stat(f); err == nil {
				t.Errorf("%s remains after dpkg -P", f)
			}
		}
	})
	if b, err := exec.Command("dpkg", "-i", debs[0]).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, b)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed package lacks %s: %v", f, err)
		}
	}
	b, err := exec.Command("/usr/bin/dnms", "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(b), "dnms ") {
		t.Errorf("/usr/bin/dnms -version: %v %q", err, b)
	}
	// The installed config is valid as shipped.
	if b, err := exec.Command("/usr/bin/dnms", "-config", "/etc/dnms/dnms.yaml", "-gossipAddr", "198.18.0.1", "-print-config").CombinedOutput(); err != nil {
		t.Errorf("dnms -config /etc/dnms/dnms.yaml -print-config: %v\n%s", err, b)
	}
}
