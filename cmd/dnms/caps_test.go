package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/lab"
)

func TestMissingCaps(t *testing.T) {
	all := capBPF.bit() | capNetAdmin.bit()
	for _, tc := range []struct {
		eff  uint64
		want string
	}{
		{all, ""},
		{capNetAdmin.bit(), "CAP_BPF"},
		{0, "CAP_BPF,CAP_NET_ADMIN"},
	} {
		if got := strings.Join(missingCaps(tc.eff, ebpfCaps), ","); got != tc.want {
			t.Errorf("eff %#x: missing %q, want %q", tc.eff, got, tc.want)
		}
	}
	if n := len(keptCaps(80, false)); n != 3 {
		t.Errorf("API on port 80 keeps %d capabilities, want 3 (CAP_NET_BIND_SERVICE too)", n)
	}
	if keep := keptCaps(12345, true); len(keep) != 3 || keep[2] != capNetRaw {
		t.Errorf("with -targets dnms keeps %v, want CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW", keep)
	}
}

// TestLeastPrivilege runs dnms in a lab host as an unprivileged user with
// only the ambient capabilities it needs (setpriv, as systemd's
// AmbientCapabilities= does): it gets the ebpf time source. Without CAP_BPF
// it says so in one line and uses kernel timestamps. Run as root, it keeps
// only CAP_BPF and CAP_NET_ADMIN once started.
func TestLeastPrivilege(t *testing.T) {
	lab.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	// A directory the unprivileged user can read (t.TempDir is 0700).
	dir, err := os.MkdirTemp("", "dnms-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "dnms")
	if err := os.Rename(buildDNMS(t), bin); err != nil {
		t.Fatal(err)
	}
	f := lab.New(t, lab.Config{Spines: 1, Leaves: 1, HostsPerLeaf: 1})
	h := f.Hosts[0]
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	withCaps := func(caps string) []string {
		return append(nobody, "--inh-caps=-all,"+caps, "--ambient-caps=-all,"+caps, "--bounding-set=-all,"+caps)
	}
	for _, tc := range []struct {
		name     string
		wrap     []string
		source   string
		warnings int    // "eBPF unavailable" lines
		missing  string // in that line
		eff      uint64 // CapEff once started
	}{
		{"nobody with CAP_BPF and CAP_NET_ADMIN", withCaps("+bpf,+net_admin"), "ebpf", 0, "", capBPF.bit() | capNetAdmin.bit()},
		{"nobody without CAP_BPF", withCaps("+net_admin"), "kernel", 1, "missingCapabilities=CAP_BPF", capNetAdmin.bit()},
		{"root drops the rest", nil, "ebpf", 0, "", capBPF.bit() | capNetAdmin.bit()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string(nil), tc.wrap...), bin, "-gossipAddr", h.Addr.String(),
				"-httpAddr", h.Addr.String()+":12345")
			cmd, err := f.Command(h.NS, args...)
			if err != nil {
				t.Fatal(err)
			}
			var out lab.Output
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := f.StartCmd(cmd); err != nil {
				t.Fatal(err)
			}
			defer f.Stop(cmd)
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(out.String(), "dnms started") {
				if time.Now().After(deadline) {
					t.Fatalf("dnms did not start:\n%s", out.String())
				}
				time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
			}
			log := out.String()
			if !strings.Contains(log, "timestamps="+tc.source) {
				t.Errorf("want timestamps=%s:\n%s", tc.source, log)
			}
			if n := strings.Count(log, "eBPF unavailable"); n != tc.warnings || tc.missing != "" && !strings.Contains(log, tc.missing) {
				t.Errorf("%d eBPF-unavailable lines, want %d naming %q:\n%s", n, tc.warnings, tc.missing, log)
			}
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			for _, set := range []string{"CapEff", "CapPrm", "CapBnd"} {
				want := fmt.Sprintf("%s:\t%016x", set, tc.eff)
				if !strings.Contains(string(status), want) {
					t.Errorf("want %s after start; /proc status:\n%s", want, grepCaps(string(status)))
				}
			}
		})
	}
}

func grepCaps(status string) string {
	var out []string
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "Cap") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
