package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnit checks scripts/dnms.service with `systemd-analyze
// verify` (any complaint about the unit fails the test) and that it keeps
// the least-privilege settings the README promises. ExecStart points at
// /bin/true in the copy verified, since dnms need not be installed here.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../scripts/dnms.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_NET_RAW\n", "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_NET_RAW\n",
		"DynamicUser=yes\n", "NoNewPrivileges=yes\n", "ProtectSystem=strict\n",
		"ExecStart=/usr/bin/dnms -config /etc/dnms/dnms.yaml $DNMS_ARGS\n", "EnvironmentFile=-/etc/default/dnms\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("dnms.service lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	p := filepath.Join(t.TempDir(), "dnms.service")
	body := strings.Replace(string(unit), "ExecStart=/usr/bin/dnms", "ExecStart=/bin/true", 1)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", p).CombinedOutput()
	if err != nil || strings.Contains(string(out), "dnms.service") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
