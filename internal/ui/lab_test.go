package ui_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// TestPageLab opens the aggregator's page in Chromium on a lab fabric of
// real agents running with -httpToken: the prompt and no data without the
// token, the fabric's links each drawn once, 5% loss on leaf1→spine1 turning
// that link faulty on the page no later than the API says so (plus one
// refresh), the heatmap cell of a pair through it changing, and the stream
// shown down and back when the aggregator restarts. Screenshots of every
// state go to the test's artifact directory (go test -artifacts).
func TestPageLab(t *testing.T) {
	lab.RequireRoot(t)
	ctx := browser(t)
	bin := filepath.Join(t.TempDir(), "dnms")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/dnms/dnms/cmd/dnms").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const token = "ui-test-token-5b0e"
	f := lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 2, Leaves: 3, HostsPerLeaf: 2})
	c, err := demo.Start(demo.Config{Binary: bin, Fabric: f, LogDir: t.TempDir(), Token: token,
		Args: []string{"-pingRouteInterval", "200ms", "-mapInterval", "100ms"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	agg := c.AggregatorHost().Name
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s\n--- aggregator %s log tail:\n%s", fmt.Sprintf(format, a...), agg, c.Tail(agg, 30))
	}
	// The browser runs in the root namespace; the proxy carries it to the
	// aggregator's API inside the fabric, as make demo does.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pctx, stopProxy := context.WithCancel(context.Background())
	proxied := make(chan error, 1)
	go func() { proxied <- c.Proxy(pctx, ln) }()
	t.Cleanup(func() { stopProxy(); <-proxied })
	page := "http://" + ln.Addr().String() + "/"

	start := time.Now()
	pairs := len(f.Hosts) * (len(f.Hosts) - 1)
	if err := demo.WaitFor(context.Background(), 90*time.Second, time.Second, c.AllPairsMeasured(10, "")); err != nil {
		fail("mapping: %v", err)
	}
	t.Logf("all %d pairs measured after %s", pairs, time.Since(start).Round(time.Millisecond))

	t.Run("token", func(t *testing.T) {
		load(t, ctx, page, `document.getElementById("token-dialog").open`)
		saveScreenshot(t, ctx, "token-prompt.png")
		// A wrong token is refused and asked for again.
		if err := chromedp.Do(ctx, chromedp.SendKeys("#token-input", "wrong-token"), chromedp.Click("#token-form button")); err != nil {
			t.Fatal(err)
		}
		if err := waitJS(ctx, 10*time.Second, `document.getElementById("token-dialog").open && document.getElementById("token-error").textContent.includes("refused")`); err != nil {
			t.Fatalf("wrong token not refused on the page: %v", err)
		}
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](dataRequestsOK))
		if err != nil || len(ok) != 0 {
			t.Fatalf("data requests succeeded without the right token: %v %v", ok, err)
		}
		if err := chromedp.Do(ctx, chromedp.SendKeys("#token-input", token), chromedp.Click("#token-form button")); err != nil {
			t.Fatal(err)
		}
		if err := waitJS(ctx, 20*time.Second, `document.body.dataset.routes === "1" && document.getElementById("stream").dataset.state === "live"`); err != nil {
			t.Fatalf("with the token: %v", err)
		}
		urls, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`performance.getEntriesByType("resource").map(e => e.name)`))
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range urls {
			if strings.Contains(u, token) {
				t.Errorf("the token is in a URL: %s", u)
			}
		}
	})

	want := map[string]bool{}
	id := map[string]string{}
	for _, h := range f.Hosts {
		id[h.Name] = h.Addr.String()
	}
	for _, r := range f.Routers {
		id[r.Name] = r.Loopback.String()
	}
	for _, l := range f.Links {
		want[pairKey(id[l.A.Node], id[l.B.Node])] = true
	}
	t.Run("topology", func(t *testing.T) {
		js := fmt.Sprintf(`document.querySelectorAll("g.link").length === %d`, len(want))
		if err := waitJS(ctx, 30*time.Second, js); err != nil {
			t.Errorf("%v (want one per fabric link)", err)
		}
		checkTopology(t, ctx, want)
		saveScreenshot(t, ctx, "healthy.png")
	})

	leaf, spine := f.Routers[0], f.Routers[0]
	for _, r := range f.Routers {
		if r.Role == "leaf" && leaf.Role != "leaf" {
			leaf = r
		}
		if r.Role == "spine" && spine.Role != "spine" {
			spine = r
		}
	}
	broken := graph.LinkID{Src: leaf.Loopback.String(), Dst: spine.Loopback.String()}
	t.Run("fault", func(t *testing.T) {
		routes, err := c.Routes()
		if err != nil {
			t.Fatal(err)
		}
		affected := pairsThrough(routes, broken)
		if len(affected) == 0 {
			t.Fatalf("no route crosses %s→%s", broken.Src, broken.Dst)
		}
		before := map[[2]string]cell{}
		for _, p := range affected {
			before[p] = heatCell(t, ctx, p[0], p[1])
		}

		if err := f.SetLoss(f.LinkBetween(leaf.Name, spine.Name), leaf.Name, 5); err != nil {
			t.Fatal(err)
		}
		faultAt := time.Now()
		apiAt, pageAt := watchFault(ctx, c, broken)
		if apiAt.IsZero() {
			fail("the API did not rank %s→%s faulty within 60 s", leaf.Name, spine.Name)
		}
		if pageAt.IsZero() {
			fail("the API said faulty after %s, the page did not follow", apiAt.Sub(faultAt).Round(time.Millisecond))
		}
		// The page refetches health at most once a second after route
		// updates; allow that plus scheduling on a loaded machine.
		const slack = 5 * time.Second
		t.Logf("5%% loss on %s→%s: faulty in the API after %s, on the page after %s",
			leaf.Name, spine.Name, apiAt.Sub(faultAt).Round(time.Millisecond), pageAt.Sub(faultAt).Round(time.Millisecond))
		if pageAt.Sub(apiAt) > slack {
			t.Errorf("the page showed the fault %s after the API (allowed %s)", pageAt.Sub(apiAt).Round(time.Millisecond), slack)
		}

		// The heatmap cell of a pair through the link darkens.
		err = demo.WaitFor(context.Background(), 20*time.Second, 250*time.Millisecond, func() error {
			for _, p := range affected {
				now := heatCell(t, ctx, p[0], p[1])
				if now.Value > before[p].Value && sum(now.RGB) < sum(before[p].RGB) {
					t.Logf("heatmap %s→%s: loss %.4f → %.4f, rgb %v → %v", p[0], p[1], before[p].Value, now.Value, before[p].RGB, now.RGB)
					return nil
				}
			}
			return fmt.Errorf("no heatmap cell of the %d pairs through the link got lossier and darker", len(affected))
		})
		if err != nil {
			t.Error(err)
		}
		shot := saveScreenshot(t, ctx, "faulty.png")
		// Nothing moved while the data streamed in (cumulative layout shift
		// since the first paint, input-driven shifts excluded).
		shift, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
			Total, Table float64
			Sources      []string
		}](layoutShift, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("layout shift since the first paint: %.4f outside the health table %v, %.4f inside (rows re-sorted when a verdict changed)",
			shift.Total, shift.Sources, shift.Table)
		if shift.Total > 0.001 {
			t.Errorf("the page's layout shifted by %.4f while streaming: %v", shift.Total, shift.Sources)
		}
		// Select the faulty link from the table: its routes are listed.
		sel := fmt.Sprintf(`#health-table button[data-src=%q][data-dst=%q]`, broken.Src, broken.Dst)
		if err := chromedp.Do(ctx, chromedp.Click(sel)); err != nil {
			t.Fatal(err)
		}
		if err := waitJS(ctx, 5*time.Second, `document.querySelectorAll("#pair-routes .route").length > 0 && document.querySelectorAll("g.link.hl").length > 1`); err != nil {
			t.Errorf("selecting the faulty link: %v", err)
		}
		// The listed routes show per-hop RTTs from the agents' traces.
		if err := waitJS(ctx, 10*time.Second, `document.querySelectorAll("#pair-routes .rtt").length > 0`); err != nil {
			t.Errorf("no per-hop RTT in the drill-down: %v", err)
		}
		saveScreenshot(t, ctx, "faulty-selected.png")
		if *updateDocs {
			b, err := os.ReadFile(shot)
			if err == nil {
				err = os.WriteFile(filepath.Join("..", "..", "docs", "ui-faulty.png"), b, 0o644)
			}
			if err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("stream-down-and-back", func(t *testing.T) {
		if err := c.StopAgent(agg, false); err != nil {
			t.Fatal(err)
		}
		if err := waitJS(ctx, 15*time.Second, `document.getElementById("stream").dataset.state === "down"`); err != nil {
			t.Errorf("aggregator stopped: %v", err)
		}
		saveScreenshot(t, ctx, "stream-down.png")
		if err := c.StartAgent(agg); err != nil {
			t.Fatal(err)
		}
		if err := waitJS(ctx, 30*time.Second, `document.getElementById("stream").dataset.state === "live"`); err != nil {
			t.Errorf("aggregator back: %v", err)
		}
	})
}

// layoutShift sums the layout-shift entries after the first paint that no
// input caused (Chromium's Layout Instability API), apart from those inside
// the health table, whose rows move when a verdict changes (by design).
const layoutShift = `new Promise(res => {
	const after = performance.getEntriesByName("dnms-first-paint")[0].startTime;
	const name = (n) => !n ? "?" : n.nodeType !== 1 ? n.nodeName : n.tagName.toLowerCase() + (n.id ? "#" + n.id : "") + (n.className && typeof n.className === "string" ? "." + n.className : "");
	const o = new PerformanceObserver(l => {
		o.disconnect();
		const es = l.getEntries().filter(e => !e.hadRecentInput && e.startTime > after);
		const inTable = (e) => e.sources.every(s => s.node && s.node.closest && s.node.closest("#health-table"));
		const sum = (xs) => xs.reduce((s, e) => s + e.value, 0);
		const rest = es.filter(e => !inTable(e));
		res({Total: sum(rest), Table: sum(es.filter(inTable)),
			Sources: rest.flatMap(e => e.sources.map(s => name(s.node) + " " + Math.round(s.previousRect.y) + "→" + Math.round(s.currentRect.y) + " (" + e.value.toFixed(4) + ")"))});
	});
	o.observe({type: "layout-shift", buffered: true});
	setTimeout(() => res({Total: 0, Table: 0, Sources: []}), 1000); // no entries at all: no callback
})`

// dataRequestsOK lists the page's /v1/ requests that got a 2xx.
const dataRequestsOK = `performance.getEntriesByType("resource").filter(e => e.name.includes("/v1/") && e.responseStatus >= 200 && e.responseStatus < 300).map(e => e.name)`

// watchFault polls the API and the page until both call the link faulty
// (the API: top row and faulty), or 60 s pass; it returns when each did.
func watchFault(ctx context.Context, c *demo.Cluster, l graph.LinkID) (apiAt, pageAt time.Time) {
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	js := fmt.Sprintf(`window.dnmsUI.linkVerdict(%q, %q)`, l.Src, l.Dst)
	for apiAt.IsZero() || pageAt.IsZero() {
		if apiAt.IsZero() {
			if rows, err := c.Health(); err == nil && len(rows) > 0 && rows[0].Src == l.Src && rows[0].Dst == l.Dst && rows[0].Verdict == graph.VerdictFaulty {
				apiAt = time.Now()
			}
		}
		if pageAt.IsZero() {
			if v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js)); err == nil && v == "faulty" {
				pageAt = time.Now()
			}
		}
		select {
		case <-deadline:
			return apiAt, pageAt
		case <-tick.C:
		}
	}
	return apiAt, pageAt
}

// pairsThrough lists the host pairs with a route over l.
func pairsThrough(routes []graph.Route, l graph.LinkID) [][2]string {
	seen := map[[2]string]bool{}
	var out [][2]string
	for _, r := range routes {
		for i := 1; i < len(r.Hops); i++ {
			if r.Hops[i-1] == l.Src && r.Hops[i] == l.Dst {
				p := [2]string{r.Src.String(), r.Dst.String()}
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
		}
	}
	return out
}
