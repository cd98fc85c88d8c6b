package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
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
	lossy := graph.LinkID{Src: "198.19.0.1", Dst: "198.19.1.1"}
	g := synth{leaves: 3, spines: 2, hostsPerLeaf: 2, samples: 100, lossy: map[graph.LinkID]float64{lossy: 0.2}}.build(t)
	base := serve(t, g, served{})
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
	g := synth{leaves: 2, spines: 1, hostsPerLeaf: 1, samples: 10}.build(t)
	base := serve(t, g, served{agent: true, extra: map[string]http.Handler{
		"/v1/targets": jsonDoc(`{"targets": [{"name": "dns", "target": "198.18.9.9:53", "protocol": "udp", "loss": 0.01, "rttP50Seconds": 0.0012, "rttSeconds": [0.001, 0.0012, -1, 0.0011]}]}`),
		"/v1/paths":   jsonDoc(`[{"target": "198.18.9.9", "history": [{"hops": ["198.19.0.1", "198.19.1.1"]}, {"hops": ["198.19.0.1", "198.19.1.2"]}]}]`),
	}})
	ctx := browser(t)
	load(t, ctx, base+"/", `!document.getElementById("targets-section").hidden && document.body.dataset.ready === "1"`)
	if v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("view").textContent`)); !strings.HasPrefix(v, "agent view") {
		t.Errorf("a server without -aggregator: the page says %q", v)
	}
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

// TestPageClos draws a 3-tier Clos (2 pods of 2 ToRs and 2 aggregation
// routers, 2 cores) with a silent hop: every tier on its own row, upper
// tiers above, the silent hop drawn as one, at its position's tier.
func TestPageClos(t *testing.T) {
	g := graph.New(graph.DefaultConfig())
	tor := func(h int) string { return fmt.Sprintf("198.19.%d.%d", h/2, h%2+1) }
	agg := func(h, i int) string { return fmt.Sprintf("198.19.%d.%d", 100+h/2, i+1) }
	add := func(port uint16, path ...string) {
		key := graph.RouteKey{Src: netip.MustParseAddr(path[0]), Dst: netip.MustParseAddr(path[len(path)-1]), SrcPort: port}
		hops := make([]graph.Hop, len(path))
		for i, a := range path {
			if a != "*" {
				hops[i].Addr = netip.MustParseAddr(a)
			}
		}
		g.SetRoute(key, hops)
	}
	for s := 0; s < 4; s++ {
		for d := 0; d < 4; d++ {
			hs, hd := fmt.Sprintf("198.18.%d.1", s), fmt.Sprintf("198.18.%d.1", d)
			switch {
			case s == d:
			case s/2 == d/2:
				add(40000, hs, tor(s), agg(s, d%2), tor(d), hd)
			default:
				add(40000, hs, tor(s), agg(s, d%2), fmt.Sprintf("198.19.200.%d", (s+d)%2+1), agg(d, s%2), tor(d), hd)
			}
		}
	}
	add(40001, "198.18.0.1", tor(0), agg(0, 1), "*", agg(2, 1), tor(2), "198.18.2.1")
	ctx := browser(t)
	load(t, ctx, serve(t, g, served{})+"/", `document.body.dataset.ready === "1"`)
	checkTopology(t, ctx, snapshotLinks(g.Snapshot()))
	saveScreenshot(t, ctx, "clos.png")

	nodes, err := chromedp.Run(ctx, chromedp.Evaluate[[]struct {
		ID, Kind string
		Tier     int
		Y        float64
	}](`window.dnmsUI.state.layout.nodes.map(n => ({ID: n.id, Kind: n.kind, Tier: n.tier,
		Y: document.querySelector('g.node[data-node="' + CSS.escape(n.id) + '"]').transform.baseVal[0].matrix.f}))`))
	if err != nil {
		t.Fatal(err)
	}
	wantTier := func(id, kind string) int {
		switch {
		case kind == "silent":
			return 3 // the core's position
		case strings.HasPrefix(id, "198.18."):
			return 0
		case strings.HasPrefix(id, "198.19.200."):
			return 3
		case strings.HasPrefix(id, "198.19.10"):
			return 2
		}
		return 1
	}
	rowY := map[int]float64{}
	silent := 0
	for _, n := range nodes {
		if want := wantTier(n.ID, n.Kind); n.Tier != want {
			t.Errorf("%s (%s) in tier %d, want %d", n.ID, n.Kind, n.Tier, want)
		}
		if y, ok := rowY[n.Tier]; ok && y != n.Y {
			t.Errorf("%s drawn at y=%.0f, its tier's row is y=%.0f", n.ID, n.Y, y)
		}
		rowY[n.Tier] = n.Y
		if n.Kind == "silent" {
			silent++
		}
	}
	for tier := 1; tier < 4; tier++ {
		if !(rowY[tier] < rowY[tier-1]) {
			t.Errorf("tier %d at y=%.0f is not above tier %d at y=%.0f", tier, rowY[tier], tier-1, rowY[tier-1])
		}
	}
	drawnSilent, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('g.node[data-kind="silent"] path').length`))
	if err != nil || silent != 1 || drawnSilent != 1 {
		t.Errorf("silent hops: %d in the layout, %d drawn as diamonds (%v); want 1", silent, drawnSilent, err)
	}
}

// TestPageStreamResume: when the event stream ends, the page reconnects
// with Last-Event-ID set to the last id it saw, whatever its form (here
// "<instance>-<seq>"), in a header and never in the URL, and applies what
// follows.
func TestPageStreamResume(t *testing.T) {
	g := synth{leaves: 2, spines: 1, hostsPerLeaf: 2, samples: 10}.build(t)
	snap := g.Snapshot()
	snapJSON, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	extra := snap.Routes[0]
	extra.ID = "feedfacefeedface"
	extra.Metrics.Samples, extra.Metrics.Lost, extra.Metrics.Loss = 10, 5, 0.5
	addJSON, err := json.Marshal(graph.Event{ID: 6, Type: graph.EventRouteAdd, Route: &extra})
	if err != nil {
		t.Fatal(err)
	}
	type reconnect struct{ lastID, query string }
	second := make(chan reconnect, 1)
	var conns atomic.Int32
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		if conns.Add(1) == 1 {
			fmt.Fprintf(w, "retry: 200\n\nevent: snapshot\nid: inst-a-5\ndata: %s\n\n", snapJSON)
			rc.Flush()
			return // the stream ends
		}
		select {
		case second <- reconnect{r.Header.Get("Last-Event-ID"), r.URL.RawQuery}:
		default:
		}
		fmt.Fprintf(w, "event: route-add\nid: inst-a-6\ndata: %s\n\n", addJSON)
		rc.Flush()
		<-r.Context().Done()
	})
	base := serve(t, g, served{extra: map[string]http.Handler{"/v1/aggregator/events/graph": stream}})
	ctx := browser(t)
	load(t, ctx, base+"/", `document.body.dataset.routes === "1"`)
	select {
	case rc := <-second:
		if rc.lastID != "inst-a-5" || rc.query != "" {
			t.Errorf("reconnect: Last-Event-ID %q, query %q; want inst-a-5 and no query", rc.lastID, rc.query)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the page did not reconnect after the stream ended")
	}
	js := fmt.Sprintf(`window.dnmsUI.state.routes.has("feedfacefeedface") && window.dnmsUI.state.routes.size === %d && document.getElementById("stream").dataset.state === "live"`, len(snap.Routes)+1)
	if err := waitJS(ctx, 10*time.Second, js); err != nil {
		t.Errorf("after the reconnect: %v", err)
	}
}
