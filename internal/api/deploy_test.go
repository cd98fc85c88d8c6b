package api

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The files under deploy/ ship with dnms: Prometheus rules (with promtool
// unit tests), the scrape config and the Grafana dashboard. These tests
// keep them valid and keep them naming only metrics dnms exports.

const deployDir = "../../deploy"

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; scripts/deps.sh test installs it)")
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestDeployPrometheusRules(t *testing.T) {
	dir := filepath.Join(deployDir, "prometheus")
	runPromtool(t, dir, "check", "rules", "rules.yml")
	runPromtool(t, dir, "test", "rules", "rules_test.yml")
	runPromtool(t, dir, "check", "config", "prometheus.yml")
}

// exportedMetrics collects every "dnms_..." string literal in the
// non-test Go source: the names dnms can export.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`"(dnms_[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, root := range []string{"../../internal", "../../cmd"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			for _, m := range re.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// metricRefs returns the dnms metric names an expression uses.
func metricRefs(expr string) []string {
	return regexp.MustCompile(`\bdnms_[a-z0-9_]+`).FindAllString(expr, -1)
}

func checkNames(t *testing.T, where string, exprs []string, exported map[string]bool) {
	t.Helper()
	for _, e := range exprs {
		for _, n := range metricRefs(e) {
			base := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suf); ok && exported[b] {
					base = b
				}
			}
			if !exported[base] {
				t.Errorf("%s: %s names %s, which dnms does not export", where, e, n)
			}
		}
	}
}

func ruleExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// dashboardExprs returns every PromQL expression of the dashboard (panel
// targets and annotations) and the metrics its variables read.
func dashboardExprs(t *testing.T) (exprs, varMetrics []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "dnms.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Annotations struct {
			List []struct {
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dnms.json: %v", err)
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		exprs = append(exprs, a.Expr)
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			varMetrics = append(varMetrics, v.Definition)
		}
	}
	return exprs, varMetrics
}

func TestDeployMetricNames(t *testing.T) {
	exported := exportedMetrics(t)
	for _, must := range []string{"dnms_target_rtt_seconds", "dnms_link_faulty", "dnms_route_loss_ratio"} {
		if !exported[must] {
			t.Fatalf("exported-name scan missed %s: the check would pass anything", must)
		}
	}
	checkNames(t, "rules.yml", ruleExprs(t), exported)
	exprs, vars := dashboardExprs(t)
	checkNames(t, "dnms.json", append(exprs, vars...), exported)
	// The check itself must find names in an expression.
	if refs := metricRefs(`rate(dnms_no_such_metric_total[5m])`); len(refs) != 1 || exported[refs[0]] {
		t.Fatal("metricRefs does not find names")
	}
}

// TestDeployDashboardQueriesParse hands every dashboard query, Grafana's
// variables replaced, to promtool's parser as a recording rule.
func TestDeployDashboardQueriesParse(t *testing.T) {
	promtool(t)
	exprs, _ := dashboardExprs(t)
	if len(exprs) < 5 {
		t.Fatalf("only %d queries in the dashboard", len(exprs))
	}
	r := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h", "${datasource}", "x", "$target", ".*")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		e = r.Replace(e)
		if strings.Contains(e, "$") {
			t.Errorf("query %q uses a variable this test does not know", e)
		}
		q, _ := json.Marshal(e) // a JSON string is a YAML double-quoted scalar
		fmt.Fprintf(&b, "      - record: dashboard_query_%d\n        expr: %s\n", i, q)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "q.yml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "q.yml")
	if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, "dnms_path_change_verdicts_total") }) {
		t.Error("the dashboard does not show path changes")
	}
}
