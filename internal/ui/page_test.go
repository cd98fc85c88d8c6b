package ui_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dnms/dnms/internal/graph"
)

// TestPageSynthetic opens the page in Chromium on a graph with a lossy link
// and checks what it draws against what the API says: every link once with
// its endpoints, every direction's verdict, the heatmap's lossy pairs, the
// drill-down of a pair.
func TestPageSynthetic(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test (-short)")
	}
	lossy := graph.LinkID{Src: "198.19.0.1", Dst: "198.19.1.1"}
	g := synth{leaves: 3, spines: 2, hostsPerLeaf: 2, samples: 100, lossy: map[graph.LinkID]float64{lossy: 0.2}}.build(t)
	base := serve(t, g, "", nil)
	ctx := browser(t)
	load(t, ctx, base+"/", `document.body.dataset.ready === "1" && document.querySelectorAll("g.link").length > 0`)
	checkTopology(t, ctx, snapshotLinks(g.Snapshot()))
	saveScreenshot(t, ctx, "synthetic.png")

	// The page shows the API's verdict for every direction.
	if err := waitJS(ctx, 10*time.Second, `document.body.dataset.routes === "1"`); err != nil {
		t.Fatal(err)
	}
	for _, r := range g.Health() {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`window.dnmsUI.linkVerdict(%q, %q)`, r.Src, r.Dst)))
		if err != nil {
			t.Fatal(err)
		}
		if got != string(r.Verdict) {
			t.Errorf("link %s→%s drawn as %q, API says %q", r.Src, r.Dst, got, r.Verdict)
		}
	}

	// A pair through the lossy link is darker than a pair that is not.
	through := heatCell(t, ctx, "198.18.0.1", "198.18.1.1")
	clean := heatCell(t, ctx, "198.18.1.1", "198.18.2.1")
	if !(through.Value > 0.02) || clean.Value != 0 || sum(through.RGB) >= sum(clean.RGB) {
		t.Errorf("heatmap: pair through the lossy link %+v, clean pair %+v: want the first lossy and darker", through, clean)
	}

	// No /v1/targets on this server: the section stays hidden.
	if hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("targets-section").hidden`)); err != nil || !hidden {
		t.Errorf("targets section shown without /v1/targets (hidden=%v, %v)", hidden, err)
	}

	// Keyboard: focus the heatmap, move to a pair, Enter lists its routes.
	if err := chromedp.Do(ctx, chromedp.Focus("#heatmap"), chromedp.KeyEvent("\r")); err != nil { // cursor starts at row 0, column 1
		t.Fatal(err)
	}
	routes, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#pair-routes .route").length`))
	if err != nil {
		t.Fatal(err)
	}
	if routes != 2 { // 198.18.0.1 ↔ 198.18.0.2, one route each way
		t.Errorf("drill-down after Enter on the heatmap lists %d routes, want 2", routes)
	}
}

// snapshotLinks is the set of node pairs a snapshot links, "a|b" with a < b.
func snapshotLinks(snap graph.Snapshot) map[string]bool {
	want := map[string]bool{}
	for _, l := range snap.Links {
		want[pairKey(l.Src, l.Dst)] = true
	}
	return want
}

func pairKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return a + "|" + b
}

// checkTopology asserts the page draws every link in want ("a|b", a < b)
// exactly once, nothing else, with its ends on the drawn nodes.
func checkTopology(t *testing.T, ctx context.Context, want map[string]bool) {
	t.Helper()
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[[]struct {
		A, B           string
		X1, Y1, X2, Y2 float64
		AX, AY, BX, BY float64
		HasA, HasB     bool
	}](`[...document.querySelectorAll("g.link")].map(g => {
		const hit = g.querySelector("line.hit");
		const pos = (id) => { const n = document.querySelector('g.node[data-node="' + CSS.escape(id) + '"]'); return n ? n.transform.baseVal[0].matrix : null; };
		const a = pos(g.dataset.a), b = pos(g.dataset.b);
		return {A: g.dataset.a, B: g.dataset.b, X1: +hit.getAttribute("x1"), Y1: +hit.getAttribute("y1"), X2: +hit.getAttribute("x2"), Y2: +hit.getAttribute("y2"),
			HasA: !!a, HasB: !!b, AX: a ? a.e : 0, AY: a ? a.f : 0, BX: b ? b.e : 0, BY: b ? b.f : 0};
	})`))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, d := range drawn {
		k := d.A + "|" + d.B
		seen[k]++
		if !want[k] {
			t.Errorf("page draws a link %s that the graph does not have", k)
		}
		if !d.HasA || !d.HasB {
			t.Errorf("link %s: endpoint node missing (a %v, b %v)", k, d.HasA, d.HasB)
			continue
		}
		if !near(d.X1, d.AX) || !near(d.Y1, d.AY) || !near(d.X2, d.BX) || !near(d.Y2, d.BY) {
			t.Errorf("link %s drawn from (%.0f,%.0f) to (%.0f,%.0f), nodes at (%.0f,%.0f) and (%.0f,%.0f)", k, d.X1, d.Y1, d.X2, d.Y2, d.AX, d.AY, d.BX, d.BY)
		}
	}
	var missing []string
	for k := range want {
		if seen[k] != 1 {
			missing = append(missing, fmt.Sprintf("%s drawn %d times", k, seen[k]))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("links not drawn exactly once:\n%s", strings.Join(missing, "\n"))
	}
}

func near(a, b float64) bool { return a-b < 0.01 && b-a < 0.01 }

func sum(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

// cell is what the heatmap holds and draws for one pair.
type cell struct {
	Value float64 `json:"value"`
	RGB   []int   `json:"rgb"`
}

func heatCell(t *testing.T, ctx context.Context, src, dst string) cell {
	t.Helper()
	c, err := chromedp.Run(ctx, chromedp.Evaluate[cell](fmt.Sprintf(`window.dnmsUI.heatCell(%q, %q)`, src, dst)))
	if err != nil {
		t.Fatalf("heatmap cell %s→%s: %v", src, dst, err)
	}
	return c
}

// TestPageTargets: when the server has /v1/targets and /v1/paths, the page
// shows them: a row per target with sparklines, the path history with the
// change marked.
func TestPageTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test (-short)")
	}
	g := synth{leaves: 2, spines: 1, hostsPerLeaf: 1, samples: 10}.build(t)
	base := serve(t, g, "", map[string]string{
		"/v1/targets": `{"targets": [{"name": "dns", "target": "198.18.9.9:53", "protocol": "udp", "loss": 0.01, "rttP50Seconds": 0.0012, "rttSeconds": [0.001, 0.0012, -1, 0.0011]}]}`,
		"/v1/paths":   `[{"target": "198.18.9.9", "history": [{"hops": ["198.19.0.1", "198.19.1.1"]}, {"hops": ["198.19.0.1", "198.19.1.2"]}]}]`,
	})
	ctx := browser(t)
	load(t, ctx, base+"/", `!document.getElementById("targets-section").hidden`)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Rows, Sparks int
		Paths        string
	}](`({Rows: document.querySelectorAll("#targets tbody tr").length, Sparks: document.querySelectorAll("#targets svg.spark").length,
		Paths: document.getElementById("paths").textContent})`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Rows != 1 || got.Sparks != 1 || !strings.Contains(got.Paths, "changed") || !strings.Contains(got.Paths, "198.19.1.2") {
		t.Errorf("targets section: %+v", got)
	}
}
