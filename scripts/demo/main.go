// Command demo is `make demo`: it builds a leaf-spine lab fabric in network
// namespaces, runs dnms on every host (the first one also aggregates), waits
// for every host pair to be mapped and pinged, injects loss on one leaf→spine
// link and prints the aggregator's link ranking next to the link it broke.
// It removes everything it made on exit and on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dnms/dnms/internal/demo"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		bin                   = flag.String("bin", "bin/dnms", "dnms binary to run on every host")
		spines, leaves, hosts = flag.Int("spines", 2, "spine routers"), flag.Int("leaves", 3, "leaf routers"), flag.Int("hosts", 2, "hosts per leaf")
		loss                  = flag.Float64("loss", 5, "loss in percent injected on one leaf→spine link")
		listen                = flag.String("listen", "127.0.0.1:12345", "where to serve the aggregator's API and web page while the demo runs")
		hold                  = flag.Bool("hold", isTerminal(os.Stdin), "keep running for exploration until Ctrl-C (default when run from a terminal)")
		timeout               = flag.Duration("timeout", 3*time.Minute, "give up waiting after this long")
		prefix                = flag.String("prefix", "dd", "namespace name prefix")
	)
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("needs root to create network namespaces: run sudo make demo")
	}
	if _, err := os.Stat(*bin); err != nil {
		return fmt.Errorf("no dnms binary at %s (run make build): %w", *bin, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	step("building a %d-spine, %d-leaf, %d-hosts-per-leaf fabric (namespaces %s*)", *spines, *leaves, *hosts, *prefix)
	f, err := lab.Build(lab.Config{Prefix: *prefix, Spines: *spines, Leaves: *leaves, HostsPerLeaf: *hosts})
	if err != nil {
		return err
	}
	defer func() { step("removing the fabric"); f.Close() }()

	step("starting dnms on %d hosts", len(f.Hosts))
	c, err := demo.Start(demo.Config{Binary: *bin, Fabric: f,
		Args: []string{"-pingRouteInterval", "500ms", "-mapInterval", "200ms"}})
	if err != nil {
		return err
	}
	defer c.Stop()
	agg := c.AggregatorHost()
	fmt.Printf("    aggregator on %s (%s), agent logs in %s\n", agg.Name, agg.Addr, c.LogDir())
	// Serve the aggregator's API and web page from the start, so the fault
	// can be watched on the page as it happens.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve the aggregator API on %s: %w", *listen, err)
	}
	proxied := make(chan error, 1)
	go func() { proxied <- c.Proxy(ctx, ln) }()
	fmt.Printf("    the web page: http://%s/  (open it now to watch the fault arrive)\n", *listen)

	pairs := len(f.Hosts) * (len(f.Hosts) - 1)
	step("waiting until the aggregator has measured routes for all %d host pairs", pairs)
	start := time.Now()
	err = demo.WaitFor(ctx, *timeout, time.Second, func() error {
		cov, err := c.Coverage(10, "")
		if err != nil {
			return err
		}
		if cov.Pairs < pairs {
			return fmt.Errorf("%d of %d host pairs measured", cov.Pairs, pairs)
		}
		fmt.Printf("    %d routes over %d host pairs after %s\n", cov.Routes, cov.Pairs, time.Since(start).Round(time.Second))
		return nil
	})
	if err != nil {
		return fmt.Errorf("mapping: %w\nlast lines of %s's log:\n%s", err, agg.Name, c.Tail(agg.Name, 20))
	}

	leaf, err := pick(f, "leaf")
	if err != nil {
		return err
	}
	spine, err := pick(f, "spine")
	if err != nil {
		return err
	}
	link := f.LinkBetween(leaf.Name, spine.Name)
	step("injecting %.1f%% loss on %s → %s (%s → %s)", *loss, leaf.Name, spine.Name, leaf.Loopback, spine.Loopback)
	if err := f.SetLoss(link, leaf.Name, *loss); err != nil {
		return err
	}
	faultAt := time.Now()
	want := graph.LinkID{Src: leaf.Loopback.String(), Dst: spine.Loopback.String()}
	var rows []graph.LinkHealth
	err = demo.WaitFor(ctx, *timeout, time.Second, func() error {
		var err error
		if rows, err = c.Health(); err != nil {
			return err
		}
		if len(rows) == 0 || rows[0].Src != want.Src || rows[0].Dst != want.Dst {
			return errors.New("the broken link is not the top row yet")
		}
		if rows[0].Verdict != graph.VerdictFaulty {
			return fmt.Errorf("the broken link is the top row, but the estimator still says %s", rows[0].Verdict)
		}
		return nil
	})
	took := time.Since(faultAt).Round(time.Second)
	names := nodeNames(f)
	fmt.Printf("\n%-4s %-26s %-9s %-9s %-8s %-8s %s\n", "rank", "link", "suspicion", "lossThru", "estLoss", "verdict", "")
	for i, r := range rows {
		if i == 8 {
			break
		}
		mark := ""
		if r.Src == want.Src && r.Dst == want.Dst {
			mark = fmt.Sprintf("<- the link we broke (%.1f%% loss)", *loss)
		}
		fmt.Printf("%-4d %-26s %-9.4f %-9.4f %-8.4f %-8s %s\n", i+1, names(r.Src)+" → "+names(r.Dst), r.Suspicion, r.AvgLossThrough, r.EstimatedLoss, r.Verdict, mark)
	}
	if err != nil {
		return fmt.Errorf("localization: %w", err)
	}
	fmt.Printf("\nthe broken link became the top row, judged faulty, %s after the fault\n", took)

	if !*hold {
		return nil
	}
	fmt.Printf("\nthe web page: http://%s/\n", *listen)
	fmt.Printf("explore: http://%s/v1/aggregator/graph/edges/health  (also /v1/aggregator/graph, /metrics)\n", *listen)
	fmt.Println("Ctrl-C to stop and remove the fabric")
	return <-proxied
}

func step(format string, a ...any) { fmt.Printf("==> "+format+"\n", a...) }

func pick(f *lab.Fabric, role string) (lab.Router, error) {
	for _, r := range f.Routers {
		if string(r.Role) == role {
			return r, nil
		}
	}
	return lab.Router{}, fmt.Errorf("the lab fabric has no %s router", role)
}

// isTerminal asks the tty driver: /dev/null is a character device too.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// nodeNames maps node IDs (addresses) to lab names for the printed table.
func nodeNames(f *lab.Fabric) func(string) string {
	m := map[string]string{}
	for _, r := range f.Routers {
		m[r.Loopback.String()] = r.Name
	}
	for _, h := range f.Hosts {
		m[h.Addr.String()] = h.Name
	}
	return func(id string) string {
		if n, ok := m[id]; ok {
			return n
		}
		return id
	}
}
