package ui_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
)

var updateDocs = flag.Bool("update-docs", false, "copy the faulty-link screenshot of the lab test to docs/ui-faulty.png")

// browser starts headless Chromium (Debian's chromium package) for one test
// and returns its context. Browser tests belong to the root tier: they skip
// with -short, when not root (as root Chromium runs without its sandbox,
// which containers often cannot provide) and when the binary is missing.
func browser(t testing.TB) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test: skipped with -short (root tier)")
	}
	if os.Geteuid() != 0 {
		t.Skip("browser test: root tier, run as root (sudo make test)")
	}
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("browser test: chromium not installed (Debian package chromium; scripts/deps.sh test installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.WindowSize(1400, 1900),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", bin, err)
	}
	// An uncaught exception or console.error in the page fails the test.
	var mu sync.Mutex
	var errs []string
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "uncaught: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			msg = "console.error:"
			for _, a := range e.Args {
				msg += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		mu.Lock()
		errs = append(errs, msg)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range errs {
			t.Errorf("page: %s", e)
		}
	})
	return ctx
}

// served says what serve puts behind the page.
type served struct {
	// agent serves g as an agent only (no /v1/aggregator/...).
	agent bool
	// extra serves more paths (endpoints other issues add, such as
	// /v1/targets, or a scripted event stream) in front of the API.
	extra map[string]http.Handler
}

// serve runs the API (page included) for g on a loopback port and returns
// its base URL.
func serve(t testing.TB, g *graph.Graph, o served) string {
	t.Helper()
	deps := api.Deps{Graph: g, Aggregator: g}
	if o.agent {
		deps.Aggregator = nil
	}
	s, err := api.New(api.DefaultConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", s.Handler())
	for path, h := range o.extra {
		mux.Handle(path, h)
	}
	srv := &http.Server{Handler: mux}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { s.Close(); srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// jsonDoc serves a fixed JSON document.
func jsonDoc(doc string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, doc)
	})
}

// artifactDir is where screenshots go: the test's artifact directory (kept
// with go test -artifacts, under the -outputdir), else a temp dir.
func artifactDir(t *testing.T) string { return t.ArtifactDir() }

func saveScreenshot(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
	return p
}

// synth is a leaf-spine fabric in a graph built by the graph's own code:
// every ordered host pair (or `peers` random peers per host) on one source
// port, ECMP by a hash, `samples` samples per route with `loss` on the links
// in lossy (dropping independently per link).
type synth struct {
	leaves, spines, hostsPerLeaf, peers, samples int
	lossy                                        map[graph.LinkID]float64
}

func (c synth) hosts() (hosts []string, leafOf map[string]string) {
	leafOf = map[string]string{}
	for l := 0; l < c.leaves; l++ {
		for h := 0; h < c.hostsPerLeaf; h++ {
			a := fmt.Sprintf("198.18.%d.%d", l, h+1)
			hosts = append(hosts, a)
			leafOf[a] = fmt.Sprintf("198.19.0.%d", l+1)
		}
	}
	return hosts, leafOf
}

func (c synth) build(t testing.TB) *graph.Graph {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	g := graph.New(graph.DefaultConfig())
	hosts, leafOf := c.hosts()
	now := time.Now()
	for i, s := range hosts {
		dsts := hosts
		if c.peers > 0 && c.peers < len(hosts)-1 {
			dsts = nil
			for k := 1; k <= c.peers; k++ {
				dsts = append(dsts, hosts[(i+k*7)%len(hosts)])
			}
		}
		for j, d := range dsts {
			if s == d {
				continue
			}
			path := []string{s, leafOf[s]}
			if leafOf[s] != leafOf[d] {
				path = append(path, fmt.Sprintf("198.19.1.%d", (i*31+j*17)%c.spines+1), leafOf[d])
			}
			path = append(path, d)
			key := graph.RouteKey{Src: netip.MustParseAddr(s), Dst: netip.MustParseAddr(d), SrcPort: 40000}
			hops := make([]graph.Hop, len(path))
			for k, a := range path {
				hops[k].Addr = netip.MustParseAddr(a)
			}
			g.SetRoute(key, hops)
			for n := 0; n < c.samples; n++ {
				lost := false
				for k := 1; k < len(path); k++ {
					if p := c.lossy[graph.LinkID{Src: path[k-1], Dst: path[k]}]; p > 0 && rng.Float64() < p {
						lost = true
					}
				}
				smp := graph.Sample{Seq: uint64(n), Sent: now, Lost: lost, Source: "ebpf"}
				if lost {
					smp.Dir = graph.LossForward
				} else {
					smp.RTT = time.Duration(40+rng.IntN(30)) * time.Microsecond
				}
				g.AddSample(key, smp)
			}
		}
	}
	g.Flush()
	return g
}

// load opens url and waits (30 s at most) until the JavaScript expression
// ready is true.
func load(t testing.TB, ctx context.Context, url, ready string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	if err := waitJS(ctx, 30*time.Second, ready); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(ctx context.Context, timeout time.Duration, expr string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s, %s is not true (last error: %v)", timeout, expr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
