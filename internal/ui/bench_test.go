package ui_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
)

// BenchmarkPageFirstPaint loads the page in headless Chromium against an
// aggregator-like API holding a 100-host leaf-spine fabric (10 leaves of 10
// hosts, 4 spines, every ordered host pair: 9,900 routes with 20 samples
// each) and reads the page's own marks from the Performance API, in ms
// since navigation start: "dnms-first-paint" (topology and health table
// drawn from the layout and the health rows) and "dnms-routes-paint"
// (heatmap drawn from the 5.5 MB route snapshot of the event stream). The
// baseline is the same load's first contentful paint (the empty page
// shell), so paint/shell is the cost of the data over the page itself.
func BenchmarkPageFirstPaint(b *testing.B) {
	g := synth{leaves: 10, spines: 4, hostsPerLeaf: 10, samples: 20}.build(b)
	base := serve(b, g, served{})
	ctx := browser(b)
	var paints, routes, shells []float64
	for b.Loop() {
		load(b, ctx, base+"/", `document.body.dataset.routes === "1"`)
		t, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`["dnms-first-paint", "dnms-routes-paint", "first-contentful-paint"].map(n => (performance.getEntriesByName(n)[0] || {startTime: NaN}).startTime)`))
		if err != nil {
			b.Fatal(err)
		}
		paints, routes, shells = append(paints, t[0]), append(routes, t[1]), append(shells, t[2])
	}
	p, s := median(paints), median(shells)
	b.ReportMetric(p, "ms/first-paint")
	b.ReportMetric(median(routes), "ms/routes-paint")
	b.ReportMetric(s, "ms/shell-paint")
	b.ReportMetric(p/s, "paint/shell")
	b.ReportMetric(p-s, "ms/after-shell")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkHeatmapRedraw draws a 1,000 × 1,000 host-pair matrix in the
// page's heatmap, timed in the browser with performance.now() around the
// draw and a pixel read-back (so the canvas has finished); the baseline is
// one fillRect per cell on the same canvas in the same run.
func BenchmarkHeatmapRedraw(b *testing.B) {
	g := synth{leaves: 2, spines: 1, hostsPerLeaf: 2, samples: 1}.build(b)
	base := serve(b, g, served{})
	ctx := browser(b)
	load(b, ctx, base+"/", `document.body.dataset.ready === "1"`)
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			var fast, naive []float64
			for b.Loop() {
				r, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
					Fast  []float64 `json:"fast"`
					Naive []float64 `json:"naive"`
				}](fmt.Sprintf(`window.dnmsUI.benchHeatmap(%d, 10, 2)`, n)))
				if err != nil {
					b.Fatal(err)
				}
				fast, naive = append(fast, r.Fast...), append(naive, r.Naive...)
			}
			f, nv := median(fast), median(naive)
			b.ReportMetric(f, "ms/redraw")
			b.ReportMetric(nv, "ms/fillRect-redraw")
			b.ReportMetric(nv/f, "speedup")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
