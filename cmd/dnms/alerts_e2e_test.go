package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/lab"
)

// TestPrometheusDiscoversAndAlerts runs the real dnms binary on a lab fabric
// with a targets file, and the Debian package's Prometheus inside the
// aggregator host's namespace with deploy/prometheus/prometheus.yml (its SD
// URL pointed at the aggregator) and deploy/prometheus/rules.yml (every
// `for:` cut to 0s so the test need not wait minutes). Prometheus must find
// both agents through /v1/aggregator/sd alone, and DnmsTargetDown must fire
// once a firewall on the target drops the probes.
func TestPrometheusDiscoversAndAlerts(t *testing.T) {
	lab.RequireRoot(t)
	const promBin = "/usr/bin/prometheus"
	if _, err := os.Stat(promBin); err != nil {
		t.Skipf("%s not installed (Debian package prometheus); CI installs it", promBin)
	}
	bin := buildDNMS(t)
	f := lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 1, Leaves: 2, HostsPerLeaf: 1})
	agg, target := f.Host("host1"), f.Host("host2")
	dir := t.TempDir()
	targetsFile := filepath.Join(dir, "targets.yml")
	os.WriteFile(targetsFile, []byte(fmt.Sprintf(
		"targets:\n  - {name: h2, host: %s, probe: icmp, interval: 200ms, timeout: 150ms}\n", target.Addr)), 0o644)
	c, err := demo.Start(demo.Config{Binary: bin, Fabric: f, LogDir: dir,
		Args: []string{"-targets", targetsFile, "-timestamps", "kernel"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)

	// The shipped config and rules, adapted only where a test must.
	conf, err := os.ReadFile("../../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(conf), "aggregator.example:12345", net.JoinHostPort(agg.Addr.String(), "12345"))
	s = strings.ReplaceAll(s, "scrape_interval: 15s", "scrape_interval: 1s")
	s = strings.ReplaceAll(s, "evaluation_interval: 15s", "evaluation_interval: 1s")
	s = strings.ReplaceAll(s, "refresh_interval: 30s", "refresh_interval: 1s")
	rules, err := os.ReadFile("../../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	fast := regexp.MustCompile(`(?m)^(\s+)for: .*$`).ReplaceAllString(string(rules), "${1}for: 0s")
	for name, body := range map[string]string{"prometheus.yml": s, "rules.yml": fast} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	promAddr := net.JoinHostPort(agg.Addr.String(), "9090")
	if _, err := f.Start(agg.NS, "/usr/bin/prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr); err != nil {
		t.Fatal(err)
	}
	get := nsGetter(f, agg.NS, "http://"+promAddr)
	ctx := context.Background()

	// Discovery: both agents, healthy, found through /v1/aggregator/sd.
	start := time.Now()
	if err := demo.WaitFor(ctx, 60*time.Second, 500*time.Millisecond, func() error {
		var r struct {
			Data struct {
				ActiveTargets []struct {
					Labels map[string]string `json:"labels"`
					Health string            `json:"health"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := get("/api/v1/targets", &r); err != nil {
			return err
		}
		up := map[string]bool{}
		for _, at := range r.Data.ActiveTargets {
			if at.Health == "up" {
				up[at.Labels["node"]] = true
			}
		}
		if !up["host1"] || !up["host2"] {
			return fmt.Errorf("scraped and up: %v of host1, host2 (targets %+v)", up, r.Data.ActiveTargets)
		}
		return nil
	}); err != nil {
		t.Fatalf("discovery: %v\n%s", err, c.Tail("host1", 20))
	}
	t.Logf("prometheus discovered and scraped both agents after %v", time.Since(start).Round(time.Millisecond))

	alertFiring := func(name, target string) func() error {
		return func() error {
			var r struct {
				Data struct {
					Alerts []struct {
						Labels map[string]string `json:"labels"`
						State  string            `json:"state"`
					} `json:"alerts"`
				} `json:"data"`
			}
			if err := get("/api/v1/alerts", &r); err != nil {
				return err
			}
			for _, a := range r.Data.Alerts {
				if a.Labels["alertname"] == name && a.Labels["target"] == target && a.State == "firing" {
					return nil
				}
			}
			return fmt.Errorf("%s{target=%q} not firing; alerts %+v", name, target, r.Data.Alerts)
		}
	}
	// No fault yet: the target answers.
	if alertFiring("DnmsTargetDown", "h2")() == nil {
		t.Fatal("DnmsTargetDown fires before any fault")
	}
	if out, err := f.Exec(target.NS, "nft", "add table inet dnmsfault; add chain inet dnmsfault in { type filter hook input priority 0 ; }; add rule inet dnmsfault in icmp type echo-request drop"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	start = time.Now()
	if err := demo.WaitFor(ctx, 30*time.Second, 500*time.Millisecond, alertFiring("DnmsTargetDown", "h2")); err != nil {
		t.Fatal(err)
	}
	t.Logf("DnmsTargetDown firing %v after the fault", time.Since(start).Round(time.Millisecond))
}

// nsGetter returns a function that GETs base+path from inside namespace ns
// and decodes the JSON answer into v.
func nsGetter(f *lab.Fabric, ns, base string) func(path string, v any) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = f.Do(ns, func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}}}
	return func(path string, v any) error {
		resp, err := client.Get(base + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return json.Unmarshal(b, v)
	}
}
