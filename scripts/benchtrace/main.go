// Command benchtrace compares the dnms mapper's ECMP discovery with scamper's
// MDA tracelb on the same lab pairs: paths found (against the lab's ground
// truth) and probes sent by each. Needs root; builds its own lab fabric and
// deletes it on exit.
//
//	go run ./scripts/benchtrace [-spines 4] [-leaves 2] [-hosts 1] [-ports 11] [-confidence 95]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/mapper"
	"github.com/dnms/dnms/internal/probe"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchtrace:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		spines     = flag.Int("spines", 4, "spines in the lab fabric")
		leaves     = flag.Int("leaves", 2, "leaves in the lab fabric")
		hosts      = flag.Int("hosts", 1, "hosts per leaf")
		ports      = flag.Int("ports", 11, "source ports the mapper sweeps (from 33436)")
		confidence = flag.Int("confidence", 95, "scamper tracelb confidence (95 or 99)")
		tracer     = flag.String("tracer", "engine", "dnms tracer: engine (internal/probe, dnms on every host) or hop (one lab.ProbeHop per TTL, sequential)")
		prefix     = flag.String("prefix", fmt.Sprintf("bt%04x", os.Getpid()&0xffff), "lab namespace prefix")
	)
	flag.Parse()
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: builds network namespaces")
	}
	if _, err := exec.LookPath("scamper"); err != nil {
		return fmt.Errorf("scamper not installed: %w", err)
	}
	f, err := lab.Build(lab.Config{Prefix: *prefix, Spines: *spines, Leaves: *leaves, HostsPerLeaf: *hosts})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	defer f.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	engines := map[string]*probe.Engine{}
	if *tracer == "engine" {
		for _, h := range f.Hosts {
			e, err := startEngine(ctx, f, h, *ports)
			if err != nil {
				return err
			}
			defer e.Close()
			engines[h.Name] = e
		}
	} else if *tracer != "hop" {
		return fmt.Errorf("-tracer %q: want engine or hop", *tracer)
	}
	byName := map[string]lab.Host{}
	for _, h := range f.Hosts {
		byName[h.Name] = h
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Printf("lab: %d spines, %d leaves, %d hosts per leaf; dnms: %d source ports, tracer %s; scamper: tracelb -P udp-sport -c %d\n",
		*spines, *leaves, *hosts, *ports, *tracer, *confidence)
	fmt.Fprintf(tw, "pair\ttruth\tdnms paths\tdnms probes\tdnms re-sweep probes\tdnms confident\tscamper paths\tscamper probes\t\n")
	var tot struct{ truth, dPaths, dProbes, dResweep, sPaths, sProbes int }
	for _, ps := range f.GroundTruth().Pairs {
		src, dst := byName[ps.Src], byName[ps.Dst]
		if src.Leaf == dst.Leaf {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var tr mapper.Tracer = &hopTracer{f: f, host: src.Name, pingPort: mapper.DefaultConfig().PingPort, timeout: 500 * time.Millisecond}
		if e := engines[src.Name]; e != nil {
			tr = e
		}
		d, err := runMapper(ctx, tr, src, dst, *ports, ps.Paths)
		if err != nil {
			return fmt.Errorf("mapper %s→%s: %w", src.Name, dst.Name, err)
		}
		s, err := runScamper(ctx, f, src, dst, *confidence, ps.Paths)
		if err != nil {
			return fmt.Errorf("scamper %s→%s: %w", src.Name, dst.Name, err)
		}
		fmt.Fprintf(tw, "%s→%s\t%d\t%d\t%d\t%d\t%v\t%d\t%d\t\n", src.Name, dst.Name, len(ps.Paths),
			d.found, d.probes, d.resweep, d.confident, s.found, s.probes)
		tot.truth += len(ps.Paths)
		tot.dPaths += d.found
		tot.dProbes += d.probes
		tot.dResweep += d.resweep
		tot.sPaths += s.found
		tot.sProbes += s.probes
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%d\t\t%d\t%d\t\n", tot.truth, tot.dPaths, tot.dProbes, tot.dResweep, tot.sPaths, tot.sProbes)
	return tw.Flush()
}

type outcome struct {
	found, probes, resweep int
	confident              bool
}

// pathsFound counts the ground-truth paths (hops after the source) whose
// every address was seen.
func pathsFound(truth [][]netip.Addr, seen func(path []netip.Addr) bool) int {
	n := 0
	for _, p := range truth {
		if seen(p) {
			n++
		}
	}
	return n
}

// runMapper runs one mapper from src to dst for two sweeps and reports the
// probes of the first (discovery) and of the second (steady state).
func runMapper(ctx context.Context, next mapper.Tracer, src, dst lab.Host, ports int, truth [][]netip.Addr) (outcome, error) {
	cfg := mapper.DefaultConfig()
	cfg.LocalAddr = src.Addr
	cfg.SrcPortEnd = cfg.SrcPortStart + uint16(ports) - 1
	cfg.Interval = time.Millisecond
	cfg.Jitter = 0
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.DiscardHandler)
	tr := &countingTracer{next: next}
	g := graph.New(graph.DefaultConfig())
	m, err := mapper.New(cfg, tr, g)
	if err != nil {
		return outcome{}, err
	}
	defer m.Close()
	m.AddPeer(dst.Addr)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	defer func() { cancel(); <-done }()

	// The tracer counts the probes of each sweep itself: traces are
	// sequential, so sweep i is calls [i*ports, (i+1)*ports).
	if err := tr.wait(ctx, 2*ports); err != nil {
		return outcome{}, err
	}
	var o outcome
	o.probes = tr.sum(0, ports)
	o.resweep = tr.sum(ports, 2*ports)
	if os.Getenv("BENCHTRACE_DEBUG") != "" {
		fmt.Fprintln(os.Stderr, "probes per trace:", tr.probes)
	}
	st := m.Peers()[0]
	o.confident = st.Confident
	seen := map[netip.Addr]bool{}
	for _, e := range m.RouteMap() {
		for _, h := range e.Hops {
			if a, err := netip.ParseAddr(h); err == nil {
				seen[a] = true
			}
		}
	}
	o.found = pathsFound(truth, func(p []netip.Addr) bool {
		for _, a := range p {
			if !seen[a] {
				return false
			}
		}
		return true
	})
	return o, nil
}

// runScamper runs `scamper tracelb -P udp-sport` from src to dst.
func runScamper(ctx context.Context, f *lab.Fabric, src, dst lab.Host, confidence int, truth [][]netip.Addr) (outcome, error) {
	// -W 15 (150 ms between probes) is the fastest scamper accepts; -w 1
	// (1 s reply timeout) because the lab answers in microseconds.
	// -d: a port no dnms engine holds, so the peer answers port unreachable.
	cmd := fmt.Sprintf("tracelb -P udp-sport -d 33500 -c %d -W 15 -w 1", confidence)
	out, err := f.Exec(src.NS, "scamper", "-O", "json", "-p", "1000", "-c", cmd, "-i", dst.Addr.String())
	if err != nil {
		return outcome{}, fmt.Errorf("%v: %s", err, out)
	}
	var o outcome
	seen := map[netip.Addr]bool{}
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var rec struct {
			Type   string          `json:"type"`
			Probec int             `json:"probec"`
			Nodes  json.RawMessage `json:"nodes"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Type != "tracelb" {
			continue
		}
		found = true
		o.probes = rec.Probec
		collectAddrs(rec.Nodes, seen)
	}
	if !found {
		return outcome{}, fmt.Errorf("no tracelb record in scamper output: %s", strings.TrimSpace(string(out)))
	}
	o.found = pathsFound(truth, func(p []netip.Addr) bool {
		for _, a := range p {
			if !seen[a] {
				return false
			}
		}
		return true
	})
	return o, nil
}

// collectAddrs records every "addr" field anywhere in a JSON document.
func collectAddrs(raw json.RawMessage, seen map[netip.Addr]bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	wantAddr := false
	for {
		tok, err := dec.Token()
		if err == io.EOF || err != nil {
			return
		}
		switch v := tok.(type) {
		case string:
			if wantAddr {
				if a, err := netip.ParseAddr(v); err == nil {
					seen[a] = true
				}
				wantAddr = false
			} else {
				wantAddr = v == "addr"
			}
		default:
			wantAddr = false
		}
	}
}

// hopTracer is a Paris traceroute on lab.ProbeHop: one UDP probe per TTL
// from the same source port, ICMP read from a raw socket.
type hopTracer struct {
	f        *lab.Fabric
	host     string
	pingPort uint16
	timeout  time.Duration
}

func (t *hopTracer) Trace(ctx context.Context, peer netip.Addr, port uint16, maxTTL, maxSilent int) (mapper.TraceResult, error) {
	tr, err := t.f.TraceHops(ctx, t.host, peer, port, t.pingPort, maxTTL, maxSilent, t.timeout)
	res := mapper.TraceResult{Reached: tr.Reached, ProbesSent: tr.Probes}
	for _, a := range tr.Hops {
		res.Hops = append(res.Hops, graph.Hop{Addr: a})
	}
	return res, err
}

// countingTracer records the probes of every trace, in order.
type countingTracer struct {
	next   mapper.Tracer
	mu     sync.Mutex
	probes []int
}

func (c *countingTracer) Trace(ctx context.Context, peer netip.Addr, port uint16, maxTTL, maxSilent int) (mapper.TraceResult, error) {
	res, err := c.next.Trace(ctx, peer, port, maxTTL, maxSilent)
	c.mu.Lock()
	c.probes = append(c.probes, res.ProbesSent)
	c.mu.Unlock()
	return res, err
}

func (c *countingTracer) sum(from, to int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.probes[from:min(to, len(c.probes))] {
		n += p
	}
	return n
}

// wait polls until n traces have finished.
func (c *countingTracer) wait(ctx context.Context, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c.mu.Lock()
		got := len(c.probes)
		c.mu.Unlock()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d traces in 2 minutes, want %d", got, n)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startEngine runs a dnms probe engine (userspace reflector) in h's
// namespace until ctx is done.
func startEngine(ctx context.Context, f *lab.Fabric, h lab.Host, ports int) (*probe.Engine, error) {
	cfg := probe.DefaultConfig()
	cfg.LocalAddr = h.Addr
	cfg.SrcPortEnd = cfg.SrcPortStart + uint16(ports) - 1
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.TraceTimeout = 500 * time.Millisecond
	var e *probe.Engine
	if err := f.Do(h.NS, func() error {
		var err error
		e, err = probe.New(cfg)
		return err
	}); err != nil {
		return nil, fmt.Errorf("probe engine on %s: %w", h.Name, err)
	}
	go e.Run(ctx)
	return e, nil
}
