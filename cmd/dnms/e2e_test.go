package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// TestEndToEnd runs the real dnms binary on every host of a lab fabric, one
// host also aggregating, and checks what issue 6 promises: every host pair
// mapped and measured at the aggregator, a lossy leaf↔spine link ranked first
// in either direction and cleared when the fault goes, agents that vanish and
// return, an aggregator that restarts, garbage on every port.
func TestEndToEnd(t *testing.T) {
	// Three leaves: with two, every route through leaf1→spine1 also crosses
	// spine1→leaf2, so the two links are indistinguishable to any estimator.
	f, c, fail := startLabCluster(t, lab.Config{Spines: 2, Leaves: 3, HostsPerLeaf: 1},
		"-pingRouteInterval", "200ms", "-mapInterval", "100ms", "-logLevel", "debug")
	ctx := context.Background()
	agg := c.AggregatorHost().Name

	pairs := len(f.Hosts) * (len(f.Hosts) - 1)
	allPairs := c.AllPairsMeasured(10, "")

	start := time.Now()
	if err := demo.WaitFor(ctx, 120*time.Second, time.Second, allPairs); err != nil {
		fail("mapping: %v", err)
	}
	t.Logf("all %d host pairs measured at the aggregator after %s", pairs, time.Since(start).Round(time.Millisecond))

	t.Run("metrics", func(t *testing.T) {
		body, err := c.GetRaw(agg, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool not installed (Debian package prometheus; scripts/deps.sh test installs it)")
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on a live agent's /metrics: %v\n%s", err, out)
		}
		for _, series := range []string{
			"dnms_probes_sent_total{", "dnms_probes_received_total{", "dnms_probe_rtt_seconds_bucket{",
			"dnms_probe_jitter_seconds{", "dnms_link_suspicion{",
			"dnms_link_estimated_loss_ratio{", "dnms_packets_rejected_total{", `dnms_timestamp_source{source="ebpf"} 1`,
			"dnms_ebpf_attached{", "dnms_traces_total{", "dnms_cluster_members{", "dnms_build_info{",
		} {
			if !bytes.Contains(body, []byte(series)) {
				t.Errorf("/metrics has no %s", series)
			}
		}
		// -metricsDetail=peer (the default): loss and latency per peer, not
		// per route.
		if bytes.Contains(body, []byte("dnms_route_loss_ratio{")) {
			t.Errorf("/metrics has per-route series with the default -metricsDetail=peer")
		}
	})

	t.Run("garbage", func(t *testing.T) {
		for _, h := range f.Hosts {
			for _, target := range []struct {
				network string
				port    int
			}{{"udp", 33434}, {"tcp", 33434}, {"udp", 33435}, {"udp", 33436}, {"tcp", 12345}} {
				src := f.Hosts[0]
				err := f.Do(src.NS, func() error {
					conn, err := net.DialTimeout(target.network, net.JoinHostPort(h.Addr.String(), fmt.Sprint(target.port)), 2*time.Second)
					if err != nil {
						return err
					}
					defer conn.Close()
					for i := 0; i < 50; i++ {
						b := make([]byte, 1+i*37%1400)
						rand.Read(b)
						if i%5 == 0 && len(b) >= 4 {
							copy(b, "DNMS") // right magic, garbage after it
						}
						conn.Write(b)
					}
					return nil
				})
				if err != nil {
					t.Errorf("send garbage to %s %s:%d: %v", target.network, h.Name, target.port, err)
				}
			}
		}
		for _, h := range f.Hosts {
			if err := demo.WaitFor(ctx, 10*time.Second, 200*time.Millisecond, func() error {
				if !c.Running(h.Name) {
					return fmt.Errorf("%s exited:\n%s", h.Name, c.Tail(h.Name, 20))
				}
				return c.Get(h.Name, "/healthz", nil)
			}); err != nil {
				t.Errorf("after garbage: %v", err)
			}
			// Every rejection is counted by reason.
			body, err := c.GetRaw(h.Name, "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{"dnms_packets_rejected_total", "dnms_probe_stray_packets_total",
				"dnms_cluster_rejected_messages_total", "dnms_api_connections_rejected_total"} {
				if sumSeries(body, m) == 0 {
					t.Errorf("%s: garbage not counted in %s", h.Name, m)
				}
			}
		}
	})

	leaf1, spine1 := router(t, f, "leaf", 0), router(t, f, "spine", 0)
	link := f.LinkBetween(leaf1.Name, spine1.Name)
	for _, dir := range []struct {
		name     string
		from, to lab.Router
	}{{"leaf-to-spine", leaf1, spine1}, {"spine-to-leaf", spine1, leaf1}} {
		t.Run("fault-"+dir.name, func(t *testing.T) {
			want := graph.LinkID{Src: dir.from.Loopback.String(), Dst: dir.to.Loopback.String()}
			if err := f.SetLoss(link, dir.from.Name, 5); err != nil {
				t.Fatal(err)
			}
			faultAt := time.Now()
			var rows []graph.LinkHealth
			err := demo.WaitFor(ctx, 60*time.Second, time.Second, func() error {
				var err error
				if rows, err = c.Health(); err != nil {
					return err
				}
				if len(rows) == 0 {
					return fmt.Errorf("no health rows")
				}
				if rows[0].Src != want.Src || rows[0].Dst != want.Dst {
					return fmt.Errorf("top row %s→%s (suspicion %.4f), want %s→%s", rows[0].Src, rows[0].Dst, rows[0].Suspicion, want.Src, want.Dst)
				}
				if rows[0].Verdict != graph.VerdictFaulty {
					return fmt.Errorf("top row is right but its verdict is %s: %s", rows[0].Verdict, rows[0].Evidence)
				}
				return nil
			})
			if err != nil {
				fail("5%% loss on %s→%s: %v", dir.from.Name, dir.to.Name, err)
			}
			t.Logf("5%% loss on %s→%s: top row of the aggregator's health after %s: %+v",
				dir.from.Name, dir.to.Name, time.Since(faultAt).Round(time.Millisecond), rows[0])

			if err := f.ClearFaults(link); err != nil {
				t.Fatal(err)
			}
			clearAt := time.Now()
			err = demo.WaitFor(ctx, 90*time.Second, time.Second, func() error {
				rows, err := c.Health()
				if err != nil {
					return err
				}
				found := false
				for _, r := range rows {
					if r.Verdict == graph.VerdictFaulty {
						return fmt.Errorf("%s→%s still faulty: %s", r.Src, r.Dst, r.Evidence)
					}
					if r.Src == want.Src && r.Dst == want.Dst {
						found = true
						if r.Verdict != graph.VerdictOK || r.AvgLossThrough > 0.005 {
							return fmt.Errorf("broken link still %s, loss through %.4f", r.Verdict, r.AvgLossThrough)
						}
					}
				}
				if !found {
					return fmt.Errorf("no row for %s→%s", want.Src, want.Dst)
				}
				return nil
			})
			if err != nil {
				fail("fault removed: %v", err)
			}
			t.Logf("fault cleared from the health table %s after removal", time.Since(clearAt).Round(time.Millisecond))
		})
	}

	t.Run("agent-dies-and-returns", func(t *testing.T) {
		victim := f.Hosts[len(f.Hosts)-1]
		if victim.Name == agg {
			victim = f.Hosts[1]
		}
		if err := c.StopAgent(victim.Name, true); err != nil {
			t.Fatal(err)
		}
		gone := time.Now()
		if err := demo.WaitFor(ctx, 60*time.Second, time.Second, func() error {
			cov, err := c.Coverage(0, "")
			if err != nil {
				return err
			}
			if n := cov.Touch[victim.Addr.String()]; n > 0 {
				return fmt.Errorf("%d routes still touch %s", n, victim.Name)
			}
			return nil
		}); err != nil {
			fail("killed agent: %v", err)
		}
		t.Logf("killed agent's routes gone from the aggregator after %s", time.Since(gone).Round(time.Millisecond))
		if err := c.StartAgent(victim.Name); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		if err := demo.WaitFor(ctx, 90*time.Second, time.Second, allPairs); err != nil {
			fail("restarted agent: %v", err)
		}
		t.Logf("restarted agent's routes back after %s", time.Since(back).Round(time.Millisecond))
	})

	t.Run("aggregator-restarts", func(t *testing.T) {
		// SIGTERM: leave the cluster, detach eBPF, close streams, exit 0.
		if err := c.StopAgent(agg, false); err != nil {
			t.Fatalf("clean shutdown: %v\n%s", err, c.Tail(agg, 20))
		}
		if err := c.StartAgent(agg); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		if err := demo.WaitFor(ctx, 90*time.Second, time.Second, allPairs); err != nil {
			fail("restarted aggregator: %v", err)
		}
		t.Logf("restarted aggregator rebuilt the full view after %s", time.Since(back).Round(time.Millisecond))
	})

	for _, h := range f.Hosts {
		if !c.Running(h.Name) {
			t.Errorf("%s is not running at the end:\n%s", h.Name, c.Tail(h.Name, 20))
		}
	}
}

func router(t *testing.T, f *lab.Fabric, role string, i int) lab.Router {
	t.Helper()
	for _, r := range f.Routers {
		if string(r.Role) == role {
			if i == 0 {
				return r
			}
			i--
		}
	}
	t.Fatalf("lab fabric has too few %s routers", role)
	return lab.Router{}
}

// buildDNMS builds this command into a temporary directory.
func buildDNMS(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dnms")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build: capabilities are dropped on every thread
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// withoutBPF runs a command as root but without the capabilities eBPF needs,
// as in a container or on a locked-down host.
var withoutBPF = []string{"setpriv", "--bounding-set=-bpf,-sys_admin,-perfmon", "--inh-caps=-all"}

// TestRunsWithoutEBPF: where eBPF is not allowed, an agent on -timestamps=auto
// says so in one log line, runs on kernel timestamps and still maps and
// measures every pair; one on -timestamps=ebpf refuses to start, in one line.
func TestRunsWithoutEBPF(t *testing.T) {
	lab.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	bin := buildDNMS(t)
	f := lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 1, Leaves: 2, HostsPerLeaf: 1})

	h := f.Hosts[0]
	argv := append([]string{"netns", "exec", h.NS}, withoutBPF...)
	argv = append(argv, bin, "-gossipAddr", h.Addr.String(), "-timestamps", "ebpf")
	out, err := exec.Command("ip", argv...).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("-timestamps=ebpf without CAP_BPF: want exit status 2, got %v\n%s", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "-timestamps=ebpf") {
		t.Errorf("want one line naming -timestamps=ebpf, got:\n%s", out)
	}

	c, err := demo.Start(demo.Config{Binary: bin, Fabric: f, LogDir: t.TempDir(), Wrap: withoutBPF,
		Args: []string{"-pingRouteInterval", "200ms", "-mapInterval", "100ms"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	for _, h := range f.Hosts {
		var hz healthMeta
		if err := demo.WaitFor(context.Background(), 30*time.Second, 200*time.Millisecond, func() error {
			return c.Get(h.Name, "/healthz", &hz)
		}); err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, c.Tail(h.Name, 20))
		}
		if hz.TimeSource != "kernel" || hz.EBPF.Attached || hz.EBPF.Error == "" {
			t.Errorf("%s /healthz: timeSource %q, ebpf %+v; want kernel and an error", h.Name, hz.TimeSource, hz.EBPF)
		}
		if n := strings.Count(c.Tail(h.Name, 1000), "eBPF unavailable"); n != 1 {
			t.Errorf("%s logged the eBPF fallback %d times, want once", h.Name, n)
		}
	}
	if err := demo.WaitFor(context.Background(), 60*time.Second, time.Second, c.AllPairsMeasured(10, "kernel")); err != nil {
		t.Fatalf("without eBPF: %v\n%s", err, c.Tail(c.AggregatorHost().Name, 20))
	}
}

// sumSeries adds up every sample of metric name in Prometheus text.
func sumSeries(body []byte, name string) float64 {
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
			sum += v
		}
	}
	return sum
}
