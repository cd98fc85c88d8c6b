// Command benchtrace compares the dnms mapper's ECMP discovery with scamper's
// MDA tracelb on the same lab pairs: paths found (against the lab's ground
// truth) and probes sent by each. dnms runs -sweeps sweeps per pair; its
// probes are given for the first sweep (discovery) and as the average of the
// later ones (steady state, verification probes included), with how many
// hops each trace probed and how many it inferred (MDA node control, or TTL
// 1 reused from the FIB's single next hop). Needs root; builds its own lab
// fabric and deletes it on exit.
//
//	go run ./scripts/benchtrace [-spines 4] [-leaves 2] [-hosts 1] [-ports 11] [-sweeps 5] [-confidence 95]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/mapper"
	"github.com/dnms/dnms/internal/probe"
	"github.com/dnms/dnms/internal/probe/probelab"
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
		sweeps     = flag.Int("sweeps", 5, "mapper sweeps per pair (at least 2)")
		confidence = flag.Int("confidence", 95, "scamper tracelb confidence (95 or 99)")
		tracer     = flag.String("tracer", "engine", "dnms tracer: engine (internal/probe, dnms on every host) or hop (one lab.ProbeHop per TTL, sequential)")
		prefix     = flag.String("prefix", fmt.Sprintf("bt%04x", os.Getpid()&0xffff), "lab namespace prefix")
	)
	flag.Parse()
	if *sweeps < 2 {
		return fmt.Errorf("-sweeps %d: want at least 2", *sweeps)
	}
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
	later := fmt.Sprintf("sweeps 2-%d", *sweeps)
	fmt.Fprintf(tw, "pair\ttruth\tdnms paths\tdnms probes sweep 1\tdnms probes %s (avg)\thops probed/inferred sweep 1\thops probed/inferred %s (avg)\tdnms confident\tscamper paths\tscamper probes\t\n", later, later)
	var tot struct {
		truth, dPaths, dProbes, sPaths, sProbes int
		dLater                                  float64
		first, rest                             hopCount
	}
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
		var table *loader.FIB
		if err := f.Do(src.NS, func() (err error) { table, err = loader.OpenFIB(); return err }); err != nil {
			return fmt.Errorf("fib on %s: %w", src.Name, err)
		}
		d, err := runMapper(ctx, tr, table, src, dst, *ports, *sweeps, ps.Paths)
		table.Close()
		if err != nil {
			return fmt.Errorf("mapper %s→%s: %w", src.Name, dst.Name, err)
		}
		s, err := runScamper(ctx, f, src, dst, *confidence, ps.Paths)
		if err != nil {
			return fmt.Errorf("scamper %s→%s: %w", src.Name, dst.Name, err)
		}
		fmt.Fprintf(tw, "%s→%s\t%d\t%d\t%d\t%.2f\t%s\t%s\t%v\t%d\t%d\t\n", src.Name, dst.Name, len(ps.Paths),
			d.found, d.probes, d.later, d.first, d.rest, d.confident, s.found, s.probes)
		tot.truth += len(ps.Paths)
		tot.dPaths += d.found
		tot.dProbes += d.probes
		tot.dLater += d.later
		tot.first = tot.first.add(d.first)
		tot.rest = tot.rest.add(d.rest)
		tot.sPaths += s.found
		tot.sProbes += s.probes
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%.2f\t%s\t%s\t\t%d\t%d\t\n", tot.truth, tot.dPaths, tot.dProbes, tot.dLater,
		tot.first, tot.rest, tot.sPaths, tot.sProbes)
	return tw.Flush()
}

type outcome struct {
	found, probes int
	later         float64 // dnms: average probes of a sweep after the first
	first, rest   hopCount
	confident     bool
}

// hopCount is how the hops of a sweep's traces were learned.
type hopCount struct{ probed, inferred float64 }

func (h hopCount) add(o hopCount) hopCount {
	return hopCount{h.probed + o.probed, h.inferred + o.inferred}
}

func (h hopCount) String() string {
	if h.probed == float64(int(h.probed)) && h.inferred == float64(int(h.inferred)) {
		return fmt.Sprintf("%d/%d", int(h.probed), int(h.inferred))
	}
	return fmt.Sprintf("%.2f/%.2f", h.probed, h.inferred)
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

// runMapper runs one mapper from src to dst for sweeps sweeps and reports
// the probes and hop sources of the first (discovery) and the average of the
// others (steady state).
func runMapper(ctx context.Context, next mapper.Tracer, table mapper.FIB, src, dst lab.Host, ports, sweeps int, truth [][]netip.Addr) (outcome, error) {
	cfg := mapper.DefaultConfig()
	cfg.LocalAddr = src.Addr
	cfg.SrcPortEnd = cfg.SrcPortStart + uint16(ports) - 1
	cfg.Interval = time.Millisecond
	cfg.Jitter = 0
	cfg.FIB = table
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.DiscardHandler)
	tr := &countingTracer{next: next, hops: func() hopCount { return gatherHops(reg) }}
	g := graph.New(graph.DefaultConfig())
	m, err := mapper.New(cfg, tr, g)
	if err != nil {
		return outcome{}, err
	}
	defer m.Close()
	tr.sweeps = m.Sweeps
	m.AddPeer(dst.Addr)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	defer stop()

	// The first probe of sweep n marks the end of sweep n-1: every trace
	// before it is recorded, none after it is.
	if err := tr.waitSweep(ctx, sweeps); err != nil {
		return outcome{}, err
	}
	stop()
	var o outcome
	o.probes = tr.probesOf(0)
	bounds := tr.boundaries()
	o.first = bounds[1]
	for i := 1; i < sweeps; i++ {
		o.later += float64(tr.probesOf(i))
	}
	last := bounds[sweeps]
	o.rest = hopCount{last.probed - bounds[1].probed, last.inferred - bounds[1].inferred}
	n := float64(sweeps - 1)
	o.later /= n
	o.rest = hopCount{o.rest.probed / n, o.rest.inferred / n}
	// Every probe the mapper caused went through the tracer.
	if got, want := tr.total(), gatherCounter(reg, "dnms_trace_probes_total"); float64(got) != want {
		return o, fmt.Errorf("tracer saw %d probes, dnms_trace_probes_total says %v", got, want)
	}
	if os.Getenv("BENCHTRACE_DEBUG") != "" {
		fmt.Fprintln(os.Stderr, "calls (sweep port ttls probes):")
		for _, c := range tr.calls {
			fmt.Fprintln(os.Stderr, " ", c.sweep, c.port, c.ttls, c.probes)
		}
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

// gatherHops reads dnms_mapper_hops_total from reg.
func gatherHops(reg *prometheus.Registry) hopCount {
	var h hopCount
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "dnms_mapper_hops_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "source" {
					continue
				}
				if l.GetValue() == mapper.HopProbed {
					h.probed += m.GetCounter().GetValue()
				} else {
					h.inferred += m.GetCounter().GetValue()
				}
			}
		}
	}
	return h
}

// gatherCounter sums the counter name over its series.
func gatherCounter(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
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
// from the same source port, ICMP read from a raw socket, in order.
type hopTracer struct {
	f        *lab.Fabric
	host     string
	pingPort uint16
	timeout  time.Duration
}

func (t *hopTracer) ProbeTTLs(ctx context.Context, peer netip.Addr, port uint16, ttls []int) (mapper.ProbeResult, error) {
	var res mapper.ProbeResult
	for _, ttl := range ttls {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		a, err := t.f.ProbeHop(t.host, peer, port, t.pingPort, ttl, t.timeout)
		res.ProbesSent++
		if err != nil && !errors.Is(err, lab.ErrNoAnswer) {
			return res, err
		}
		ans := mapper.TTLAnswer{TTL: ttl, Hop: graph.Hop{Addr: a}, Dest: a == peer}
		res.Answers = append(res.Answers, ans)
		if ans.Dest {
			break
		}
	}
	return res, nil
}

// countingTracer records every round of probes with the sweep it belongs
// to, and the mapper's hop counts as each sweep ends.
type countingTracer struct {
	next   mapper.Tracer
	sweeps func() int      // the mapper's completed sweeps
	hops   func() hopCount // the mapper's hop counters
	mu     sync.Mutex
	calls  []tracerCall
	bounds []hopCount // bounds[i]: hop counts when sweep i began
}

type tracerCall struct {
	sweep, probes int
	port          uint16
	ttls          []int
}

func (c *countingTracer) ProbeTTLs(ctx context.Context, peer netip.Addr, port uint16, ttls []int) (mapper.ProbeResult, error) {
	sweep := c.sweeps()
	c.mu.Lock()
	for len(c.bounds) <= sweep {
		c.bounds = append(c.bounds, c.hops())
	}
	c.mu.Unlock()
	res, err := c.next.ProbeTTLs(ctx, peer, port, ttls)
	c.mu.Lock()
	c.calls = append(c.calls, tracerCall{sweep: sweep, probes: res.ProbesSent, port: port, ttls: ttls})
	c.mu.Unlock()
	return res, err
}

func (c *countingTracer) probesOf(sweep int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, cl := range c.calls {
		if cl.sweep == sweep {
			n += cl.probes
		}
	}
	return n
}

func (c *countingTracer) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, cl := range c.calls {
		n += cl.probes
	}
	return n
}

func (c *countingTracer) boundaries() []hopCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.bounds)
}

// waitSweep polls until sweep n has begun probing (sweeps 0..n-1 are done).
func (c *countingTracer) waitSweep(ctx context.Context, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c.mu.Lock()
		got := len(c.bounds)
		c.mu.Unlock()
		if got > n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sweeps in 2 minutes, want %d", got-1, n)
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
	e, _, err := probelab.Start(ctx, f, h, cfg)
	return e, err
}
