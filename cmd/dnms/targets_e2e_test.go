package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/lab"
)

// TestAgentTargetsReload runs the real binary with -targets in a lab host:
// SIGHUP loads a changed file (the change made invisible to the file poll:
// same size, old mtime), and a bad file is rejected with one log line naming
// file:line while the agent keeps probing the previous set.
func TestAgentTargetsReload(t *testing.T) {
	lab.RequireRoot(t)
	bin := buildDNMS(t)
	f := lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	h, target := f.Host("host1"), f.Host("host2")
	dir := t.TempDir()
	file, logPath := filepath.Join(dir, "targets.yml"), filepath.Join(dir, "agent.log")
	content := func(name string) []byte {
		return []byte(fmt.Sprintf("targets:\n  - {name: %s, host: %s, probe: icmp, interval: 100ms, timeout: 100ms}\n", name, target.Addr))
	}
	os.WriteFile(file, content("aaa"), 0o644)
	cmd, get := startTargetsAgent(t, f, bin, h, logPath, "-timestamps", "kernel", "-targets", file)
	ctx := context.Background()
	probing := func(name string) func() error {
		return func() error {
			var ts []struct {
				Name  string `json:"name"`
				Addrs []struct {
					Probes int  `json:"probes"`
					Up     bool `json:"up"`
				} `json:"addrs"`
			}
			if err := get("/v1/targets", &ts); err != nil {
				return err
			}
			if len(ts) != 1 || ts[0].Name != name || len(ts[0].Addrs) != 1 || ts[0].Addrs[0].Probes < 3 || !ts[0].Addrs[0].Up {
				return fmt.Errorf("want %s probed and up, got %+v", name, ts)
			}
			return nil
		}
	}
	if err := demo.WaitFor(ctx, 20*time.Second, 100*time.Millisecond, probing("aaa")); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("%v\n%s", err, log)
	}

	fi, _ := os.Stat(file)
	os.WriteFile(file, content("bbb"), 0o644)
	os.Chtimes(file, fi.ModTime(), fi.ModTime())
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil { // by PID: the process this test started
		t.Fatal(err)
	}
	if err := demo.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, probing("bbb")); err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}

	os.WriteFile(file, []byte("targets:\n  - {name: ccc, host: "+target.Addr.String()+", probe: tcp, port: 99999}\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	want := file + `:2: port \"99999\": want 1..65535`
	if err := demo.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		log, _ := os.ReadFile(logPath)
		if !strings.Contains(string(log), want) {
			return fmt.Errorf("no %q in the log", want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := probing("bbb")(); err != nil {
		t.Fatalf("after a bad file: %v", err)
	}
	if cmd.ProcessState != nil {
		t.Fatal("the agent exited")
	}
}

// TestAgentTargetsEBPF runs the real binary with -timestamps ebpf: its
// icmp, tcp and udp (port unreachable) target samples come from the TC
// programs' stamps, joined through the agent's ring buffer reader.
func TestAgentTargetsEBPF(t *testing.T) {
	lab.RequireRoot(t)
	bin := buildDNMS(t)
	f := lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	h, target := f.Host("host1"), f.Host("host2")
	dir := t.TempDir()
	file, logPath := filepath.Join(dir, "targets.yml"), filepath.Join(dir, "agent.log")
	os.WriteFile(file, []byte(fmt.Sprintf("defaults: {interval: 100ms, timeout: 100ms}\ntargets:\n"+
		"  - {name: gw, host: %s, probe: icmp}\n  - {name: web, host: %[1]s, port: 8082, probe: tcp}\n"+
		"  - {name: dns, host: %[1]s, port: 5354, probe: udp}\n", target.Addr)), 0o644)
	_, get := startTargetsAgent(t, f, bin, h, logPath, "-timestamps", "ebpf", "-ifaces", h.Ifname, "-targets", file)
	if err := demo.WaitFor(context.Background(), 20*time.Second, 100*time.Millisecond, func() error {
		var ts []struct {
			Name  string `json:"name"`
			Addrs []struct {
				Probes int    `json:"probes"`
				Source string `json:"source"`
			} `json:"addrs"`
		}
		if err := get("/v1/targets", &ts); err != nil {
			return err
		}
		if len(ts) != 3 {
			return fmt.Errorf("%d targets, want 3", len(ts))
		}
		for _, tg := range ts {
			if len(tg.Addrs) != 1 || tg.Addrs[0].Probes < 5 || tg.Addrs[0].Source != "ebpf" {
				return fmt.Errorf("target %s: %+v, want ≥ 5 probes, source ebpf", tg.Name, tg.Addrs)
			}
		}
		return nil
	}); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("%v\n%s", err, log)
	}
}

// startTargetsAgent starts the binary in h's namespace with the API on
// h:12345, its output in logPath, and returns it and an API getter.
func startTargetsAgent(t *testing.T, f *lab.Fabric, bin string, h lab.Host, logPath string, args ...string) (*exec.Cmd, func(string, any) error) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	api := net.JoinHostPort(h.Addr.String(), "12345")
	cmd, err := f.Command(h.NS, append([]string{bin, "-gossipAddr", h.Addr.String(), "-httpAddr", api}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := f.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	return cmd, nsGetter(f, h.NS, "http://"+api)
}
