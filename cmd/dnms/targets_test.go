package main

import (
	"io"
	"strings"
	"testing"
)

func TestTargetFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	if c.TargetsFile != "" || c.PathHistory != 10 || c.StateDir != "" {
		t.Fatalf("defaults: targets %q, pathHistory %d, stateDir %q", c.TargetsFile, c.PathHistory, c.StateDir)
	}
	c, err = parseFlags([]string{"-targets", "/etc/dnms/targets.yml", "-pathHistory", "3", "-stateDir", "/var/lib/dnms"}, io.Discard, fixedIP)
	if err != nil || c.TargetsFile != "/etc/dnms/targets.yml" || c.PathHistory != 3 || c.StateDir != "/var/lib/dnms" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, v := range []string{"0", "10001"} {
		if _, err := parseFlags([]string{"-pathHistory", v}, io.Discard, fixedIP); err == nil || !strings.Contains(err.Error(), "-pathHistory must be") {
			t.Fatalf("-pathHistory %s: %v", v, err)
		}
	}
}
