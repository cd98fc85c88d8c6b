package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
)

func TestGraphMetricsValues(t *testing.T) {
	g := fixtureGraph(t)
	reg := prometheus.NewRegistry()
	if err := reg.Register(newGraphCollector(g, nil)); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP dnms_route_samples Samples in the route's metric ring (the window the other dnms_route_* figures cover).
# TYPE dnms_route_samples gauge
dnms_route_samples{dst="198.18.1.2",port="33436",src="198.18.1.1"} 100
dnms_route_samples{dst="198.18.2.1",port="33436",src="198.18.1.1"} 100
dnms_route_samples{dst="198.18.2.1",port="33437",src="198.18.1.1"} 100
dnms_route_samples{dst="198.18.2.2",port="33438",src="198.18.1.1"} 100
dnms_route_samples{dst="198.18.2.2",port="33439",src="198.18.1.1"} 100
dnms_route_samples{dst="198.18.3.1",port="33436",src="198.18.1.1"} 100
# HELP dnms_graph_routes Routes in the graph.
# TYPE dnms_graph_routes gauge
dnms_graph_routes{view="agent"} 6
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dnms_route_samples", "dnms_graph_routes"); err != nil {
		t.Error(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string, labels map[string]string) (float64, bool) {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue next
					}
				}
				return m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	lossy := map[string]string{"src": h1.String(), "dst": h3.String(), "port": "33436"}
	for dir, want := range map[string]float64{"all": 0.1, "forward": 0.1, "reverse": 0} {
		l := map[string]string{"direction": dir}
		for k, v := range lossy {
			l[k] = v
		}
		if got, ok := get("dnms_route_loss_ratio", l); !ok || got != want {
			t.Errorf("loss %s = %v (found %v), want %v", dir, got, ok, want)
		}
	}
	if got, ok := get("dnms_route_rtt_min_seconds", lossy); !ok || got < 99e-6 || got > 101e-6 {
		t.Errorf("rtt min %v (found %v), want 100µs", got, ok)
	}
	link := map[string]string{"view": "agent", "src": spine1.String(), "dst": leaf2.String()}
	if got, ok := get("dnms_link_faulty", link); !ok || got != 1 {
		t.Errorf("dnms_link_faulty spine1→leaf2 = %v (found %v), want 1", got, ok)
	}
	if got, ok := get("dnms_link_suspicion", link); !ok || got <= 0 {
		t.Errorf("dnms_link_suspicion spine1→leaf2 = %v (found %v), want > 0", got, ok)
	}
	ok1 := map[string]string{"view": "agent", "src": leaf1.String(), "dst": spine1.String()}
	if got, ok := get("dnms_link_faulty", ok1); !ok || got != 0 {
		t.Errorf("dnms_link_faulty leaf1→spine1 = %v (found %v), want 0", got, ok)
	}
	// Cardinality: one route series per key and direction, one link series per link.
	if n := testutil.CollectAndCount(newGraphCollector(g, nil), "dnms_route_loss_ratio"); n != 6*3 {
		t.Errorf("%d dnms_route_loss_ratio series, want 18", n)
	}
	if n := testutil.CollectAndCount(newGraphCollector(g, nil), "dnms_link_suspicion"); n != len(g.Snapshot().Links) {
		t.Errorf("%d dnms_link_suspicion series, want %d", n, len(g.Snapshot().Links))
	}
	if n := testutil.CollectAndCount(newGraphCollector(g, nil), "dnms_link_delay_excess_seconds"); n != len(g.Snapshot().Links) {
		t.Errorf("%d dnms_link_delay_excess_seconds series, want one per link (%d)", n, len(g.Snapshot().Links))
	}
}

// TestMetricsLintPromtool runs `promtool check metrics` on a scrape.
func TestMetricsLintPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus); CI installs it")
	}
	g := fixtureGraph(t)
	// Exercise every family: a graph-wide stream and an auth failure.
	cfg := DefaultConfig()
	cfg.Token, cfg.RouteMetrics = "tok", true
	ts := newTestServer(t, cfg, Deps{Graph: g, Aggregator: g})
	c := openSSE(t, ts.URL+"/v1/events/graph", map[string]string{"Authorization": "Bearer tok"})
	c.next(t, streamWait)
	resp, err := http.Get(ts.URL + "/v1/graph")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	body := scrape(t, ts.URL+"/metrics", "tok")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n--- scrape:\n%s", err, out, body)
	}
	for _, name := range []string{"dnms_route_loss_ratio", "dnms_route_rtt_p99_seconds", "dnms_route_jitter_seconds",
		"dnms_link_suspicion", "dnms_link_estimated_loss_ratio", "dnms_link_faulty", "dnms_api_event_streams",
		"dnms_api_auth_failures_total", "dnms_graph_events_total"} {
		if !bytes.Contains(body, []byte("\n"+name)) {
			t.Errorf("scrape lacks %s", name)
		}
	}
}

func scrape(t *testing.T, url, token string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v\n%s", resp.StatusCode, err, body)
	}
	return body
}

// TestRealPrometheus starts the Debian package's Prometheus server on
// loopback, lets it scrape the API, and reads a dnms series back through its
// query API: over plain http with the bearer token, and over https through
// a web config (client certificate and bcrypt basic auth), the way a
// Prometheus user sets up an exporter.
func TestRealPrometheus(t *testing.T) {
	t.Run("bearer", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Token = "prom-token"
		scrapeWithPrometheus(t, cfg, fmt.Sprintf(`    authorization:
      type: Bearer
      credentials: %s
`, cfg.Token))
	})
	t.Run("tls", func(t *testing.T) {
		w := newWebFixture(t)
		cfg := DefaultConfig()
		cfg.WebConfigFile = w.config
		scrapeWithPrometheus(t, cfg, fmt.Sprintf(`    scheme: https
    basic_auth:
      username: prom
      password: %s
    tls_config:
      ca_file: %s
      cert_file: %s
      key_file: %s
`, w.password, w.caFile, w.clientCert, w.clientKey))
	})
}

// scrapeWithPrometheus serves the fixture graph with cfg and has a real
// Prometheus scrape it with job (extra scrape_config lines).
func scrapeWithPrometheus(t *testing.T, cfg Config, job string) {
	const bin = "/usr/bin/prometheus"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not installed (Debian package prometheus); CI installs it", bin)
	}
	g := fixtureGraph(t)
	cfg.RouteMetrics = true
	ts := newTestServer(t, cfg, Deps{Graph: g})

	dir := t.TempDir()
	target := ts.URL[strings.Index(ts.URL, "//")+2:]
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1m
scrape_configs:
  - job_name: dnms
%s    static_configs:
      - targets: ['%s']
`, job, target)
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := freeLoopbackAddr(t)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin,
		"--config.file="+confPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--storage.tsdb.retention.time=1h",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill() // by PID: only the process this test started
			<-exited
		}
	})

	query := `dnms_route_loss_ratio{src="198.18.1.1",dst="198.18.2.1",port="33436",direction="all"}`
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("prometheus exited: %v\n%s", err, log)
		default:
		}
		v, msg := promQuery(promAddr, query)
		if v != nil {
			if *v != 0.1 {
				t.Fatalf("prometheus has %s = %v, want 0.1", query, *v)
			}
			break
		}
		last = msg
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("no %s in prometheus after 60s; last answer: %s\nprometheus log:\n%s", query, last, log)
		}
		time.Sleep(250 * time.Millisecond) // poll interval
	}
	// The scrape went through the auth middleware.
	if got := counterValue(t, ts, "dnms_api_requests_total"); got < 1 {
		t.Errorf("no requests counted after a scrape")
	}
}

// promQuery runs an instant query; it returns the single sample's value, or
// nil and what it saw.
func promQuery(addr, q string) (*float64, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/query?query="+url.QueryEscape(q), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" || len(r.Data.Result) != 1 {
		return nil, string(b)
	}
	s, ok := r.Data.Result[0].Value[1].(string)
	if !ok {
		return nil, string(b)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, string(b)
	}
	return &v, ""
}

// freeLoopbackAddr returns a 127.0.0.1 port that was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestMetricsDetailPeer: by default (-metricsDetail=peer) /metrics has no
// per-route series and only the agent's links not called ok; with
// RouteMetrics it has both in full. The aggregator view has every link.
func TestMetricsDetailPeer(t *testing.T) {
	g := fixtureGraph(t)
	bad := 0
	for _, h := range g.Health() {
		if h.Verdict != graph.VerdictOK {
			bad++
		}
	}
	links := len(g.Snapshot().Links)
	if bad == 0 || bad == links {
		t.Fatalf("fixture has %d of %d links not ok: the test needs both kinds", bad, links)
	}
	for _, routes := range []bool{false, true} {
		gc := newGraphCollector(g, g)
		gc.routes = routes
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(gc)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				view := ""
				for _, l := range m.GetLabel() {
					if l.GetName() == "view" {
						view = l.GetValue()
					}
				}
				count[mf.GetName()+"/"+view]++
			}
		}
		wantAgent, wantRoutes := bad, 0
		if routes {
			wantAgent, wantRoutes = links, 1
		}
		if got := count["dnms_link_faulty/agent"]; got != wantAgent {
			t.Errorf("RouteMetrics=%v: %d agent link series, want %d", routes, got, wantAgent)
		}
		if got := count["dnms_link_faulty/aggregator"]; got != links {
			t.Errorf("RouteMetrics=%v: %d aggregator link series, want every link (%d)", routes, got, links)
		}
		if got := count["dnms_route_samples/"]; (got > 0) != (wantRoutes > 0) {
			t.Errorf("RouteMetrics=%v: %d route series", routes, got)
		}
	}
}

// TestEdgesCoverage: /v1/graph/edges says how many distinct sources' routes
// cross each link.
func TestEdgesCoverage(t *testing.T) {
	g := fixtureGraph(t)
	snap := g.Snapshot()
	rows := edgesWithCoverage(snap)
	if len(rows) != len(snap.Links) {
		t.Fatalf("%d rows for %d links", len(rows), len(snap.Links))
	}
	for _, r := range rows {
		if r.Routes > 0 && r.Sources < 1 {
			t.Errorf("link %v with %d routes has no source", r.LinkID, r.Routes)
		}
	}
}

// snapshotCounter is a graph whose Snapshot calls are counted; Size and
// SnapshotView come from the embedded *graph.Graph unless hidden.
type snapshotCounter struct {
	*graph.Graph
	snapshots int
}

func (c *snapshotCounter) Snapshot() graph.Snapshot {
	c.snapshots++
	return c.Graph.Snapshot()
}

// onlySnapshot is a Graph with neither Size nor SnapshotView.
type onlySnapshot struct{ g *snapshotCounter }

func (o onlySnapshot) Snapshot() graph.Snapshot   { return o.g.Snapshot() }
func (o onlySnapshot) Health() []graph.LinkHealth { return o.g.Health() }
func (o onlySnapshot) Subscribe(after uint64, buf int) *graph.Subscription {
	return o.g.Subscribe(after, buf)
}

// A /metrics scrape counts the aggregator's (and, without route series,
// the agent's) nodes, links and routes without copying the graph; a graph
// that cannot count itself gets the same figures from a snapshot.
func TestGraphMetricsSizeWithoutSnapshot(t *testing.T) {
	// The agent graph is empty.
	want := func(s graph.Snapshot) string {
		return fmt.Sprintf(`
# HELP dnms_graph_links Directed links in the graph.
# TYPE dnms_graph_links gauge
dnms_graph_links{view="agent"} 0
dnms_graph_links{view="aggregator"} %d
# HELP dnms_graph_nodes Nodes in the graph.
# TYPE dnms_graph_nodes gauge
dnms_graph_nodes{view="agent"} 0
dnms_graph_nodes{view="aggregator"} %d
# HELP dnms_graph_routes Routes in the graph.
# TYPE dnms_graph_routes gauge
dnms_graph_routes{view="agent"} 0
dnms_graph_routes{view="aggregator"} %d
`, len(s.Links), len(s.Nodes), len(s.Routes))
	}
	agent := &snapshotCounter{Graph: graph.New(graph.DefaultConfig())}
	agg := &snapshotCounter{Graph: fixtureGraph(t)}
	snap := agg.Graph.Snapshot()
	for _, tc := range []struct {
		name      string
		aggregate Graph
		copies    int
	}{{"sizer", agg, 0}, {"snapshot only", onlySnapshot{agg}, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			agg.snapshots = 0
			c := newGraphCollector(agent, tc.aggregate)
			c.routes = false
			reg := prometheus.NewRegistry()
			if err := reg.Register(c); err != nil {
				t.Fatal(err)
			}
			if len(snap.Routes) == 0 || len(snap.Links) == 0 {
				t.Fatal("test premise: the fixture graph is empty")
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want(snap)),
				"dnms_graph_links", "dnms_graph_nodes", "dnms_graph_routes"); err != nil {
				t.Error(err)
			}
			if agg.snapshots != tc.copies || agent.snapshots != 0 {
				t.Errorf("scrape copied the aggregator graph %d times (want %d), the agent's %d (want 0)",
					agg.snapshots, tc.copies, agent.snapshots)
			}
		})
	}
}
