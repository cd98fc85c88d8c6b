package targets

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/pathwatch"
	"github.com/dnms/dnms/internal/probe"
)

// runner runs one target: a probe loop per address and flow, a trace loop
// per address and flow with trace: true, and a resolve loop for names.
type runner struct {
	m      *Manager
	def    Resolved
	stats  map[netip.Addr]*addrStats
	cancel context.CancelFunc
	wg     sync.WaitGroup // probe and trace loops (not the resolve loop)
}

// start starts r's loops under m.mu.
func (m *Manager) start(def Resolved) *runner {
	ctx, cancel := context.WithCancel(m.ctx)
	r := &runner{m: m, def: def, stats: map[netip.Addr]*addrStats{}, cancel: cancel}
	trace := def.Trace && m.canTrace()
	if def.Trace && !trace {
		m.log.Warn("target has trace: true but this agent cannot trace it (no probe engine or path watch)", "target", def.Name)
	}
	for _, a := range def.Addrs {
		r.stats[a] = newAddrStats(m.cfg.Samples) // all before the loops read the map
	}
	for _, a := range def.Addrs {
		for flow := range def.Flows {
			r.wg.Go(func() { r.probeLoop(ctx, a, flow) })
			if trace {
				r.wg.Go(func() { r.traceLoop(ctx, a, flow) })
			}
		}
	}
	if _, err := netip.ParseAddr(def.Host); err != nil {
		go r.resolveLoop(ctx)
	}
	return r
}

// phase is a random start offset in [0, d), so targets do not probe in
// lockstep.
func phase(d time.Duration) time.Duration { return time.Duration(rand.Int64N(int64(d))) }

func (r *runner) probeLoop(ctx context.Context, addr netip.Addr, flow int) {
	t := r.def
	dst := netip.AddrPortFrom(addr, t.Port)
	var f probe.TargetFlow
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	timer := time.NewTimer(phase(t.Interval))
	defer timer.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(t.Interval) // the next probe starts one interval after this one
		if f == nil {
			var err error
			if f, err = r.m.cfg.Prober.Open(t.Probe, dst, flow); err != nil {
				if !warned {
					r.m.log.Error("target flow not opened; retrying every interval", "target", t.Name, "addr", addr, "flow", flow, "err", err)
					warned = true
				}
				continue
			}
		}
		res := f.Probe(ctx, t.Timeout)
		if ctx.Err() != nil {
			return
		}
		r.record(addr, flow, res)
	}
}

func (r *runner) record(addr netip.Addr, flow int, res probe.TargetResult) {
	t := r.def
	s := Sample{Addr: addr, Time: res.Sent, SrcPort: res.SrcPort, Seq: res.Seq, Lost: res.Lost, Reply: res.Reply, Source: res.Source}
	if !res.Lost {
		s.RTT = res.RTT.Seconds()
	}
	r.stats[addr].add(s)
	lv := []string{t.Name, string(t.Probe), addr.String()}
	m := r.m.met
	m.probes.WithLabelValues(lv...).Inc()
	if res.Lost {
		m.lost.WithLabelValues(lv...).Inc()
		m.up.WithLabelValues(lv...).Set(0)
	} else {
		m.rtt.WithLabelValues(lv...).Observe(res.RTT.Seconds())
		m.up.WithLabelValues(lv...).Set(1)
	}
}

// canTrace: the agent can trace targets and watch their paths.
func (m *Manager) canTrace() bool {
	return m.cfg.Tracer != nil && len(m.cfg.TraceSrcPorts) > 0 && m.cfg.Paths != nil
}

// pathFlow is the traced flow that stands for probe flow number flow. The
// trace runs on the probe engine's source port, a 5-tuple of its own, so
// the path watch judges paths by the traces' own end-to-end RTT and
// reachability, never by the target probes (which ECMP may hash onto
// another path).
func (r *runner) pathFlow(addr netip.Addr, flow int) pathwatch.Flow {
	ports := r.m.cfg.TraceSrcPorts
	return pathwatch.Flow{Target: r.def.Name, Src: r.m.cfg.Tracer.LocalAddr(), Dst: addr, SrcPort: ports[flow%len(ports)]}
}

func (r *runner) traceLoop(ctx context.Context, addr netip.Addr, flow int) {
	t := r.def
	pf := r.pathFlow(addr, flow)
	timer := time.NewTimer(phase(min(t.TraceInterval, time.Second)))
	defer timer.Stop()
	want := firstTraceProbes
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(t.TraceInterval)
		if r.m.waitTraceBudget(ctx, want) != nil {
			return
		}
		tctx, cancel := context.WithTimeout(ctx, max(t.TraceInterval, 5*time.Second))
		res, err := r.m.cfg.Tracer.Trace(tctx, addr, pf.SrcPort, r.m.cfg.MaxTTL, 3)
		cancel()
		want = r.m.chargeTrace(want, res.ProbesSent)
		if ctx.Err() != nil {
			return
		}
		if err == nil && !res.Reached {
			r.m.cfg.Paths.ObserveSample(pf, 0, true) // the path stopped reaching the target
		}
		if err != nil || !res.Reached {
			r.m.log.Debug("target trace did not reach the target", "target", t.Name, "addr", addr, "srcPort", pf.SrcPort, "err", err)
			continue
		}
		hops := make([]graph.Hop, 0, len(res.Hops)+1)
		hops = append(hops, graph.Hop{Addr: pf.Src})
		for _, h := range res.Hops {
			if h.Addr.IsValid() {
				h.Addr = h.Addr.Unmap()
			}
			hops = append(hops, h)
		}
		r.m.cfg.Paths.ObservePath(pf, hops)
	}
}

func (r *runner) resolveLoop(ctx context.Context) {
	t := time.NewTicker(r.def.Resolve)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		addrs, err := resolveHost(ctx, r.m.cfg.Resolve, r.def.Target)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.m.met.resolveErr.Inc()
			r.m.log.Warn("target host did not resolve; keeping its addresses", "target", r.def.Name, "err", err)
			continue
		}
		if !slices.Equal(addrs, r.def.Addrs) {
			r.m.reresolved(r, addrs)
			return
		}
	}
}

// reresolved restarts r with new addresses, if r is still the running
// runner of its target.
func (m *Manager) reresolved(r *runner, addrs []netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running[r.def.Name] != r {
		return
	}
	m.log.Info("target host resolves to other addresses", "target", r.def.Name, "old", r.def.Addrs, "new", addrs)
	r.cancel()
	r.wg.Wait()
	m.met.forget(r.def.Name)
	def := r.def
	def.Addrs = addrs
	m.running[def.Name] = m.start(def)
}

func (r *runner) status() Status {
	t := r.def
	st := Status{Name: t.Name, Host: t.Host, Probe: t.Probe, Port: t.Port, Flows: t.Flows, Trace: t.Trace,
		IntervalSeconds: secs(t.Interval), TimeoutSeconds: secs(t.Timeout), Addrs: make([]AddrStatus, 0, len(t.Addrs))}
	if t.Trace {
		st.TraceIntervalSeconds = secs(t.TraceInterval)
	}
	for _, a := range t.Addrs {
		as := r.stats[a].status(a)
		if t.Trace && r.m.canTrace() {
			for flow := range t.Flows {
				pf := r.pathFlow(a, flow)
				if hops := r.m.cfg.Paths.Current(pf); hops != nil {
					as.Paths = append(as.Paths, FlowPath{SrcPort: pf.SrcPort, Hops: hops})
				}
			}
		}
		st.Addrs = append(st.Addrs, as)
	}
	return st
}

func secs(d time.Duration) float64 { return d.Seconds() }

// firstTraceProbes is what a flow's first trace reserves from the trace
// cap: a guess at a datacenter path's length, corrected after the trace.
const firstTraceProbes = 8

// waitTraceBudget waits until the agent's trace cap (Config.TraceRate)
// allows a trace of n probes; it returns ctx's error if ctx ends first.
func (m *Manager) waitTraceBudget(ctx context.Context, n int) error {
	if m.cfg.TraceRate == nil {
		return ctx.Err()
	}
	d := m.cfg.TraceRate.Reserve(time.Now(), n)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// chargeTrace takes the probes a trace sent beyond the reserved ones from
// the trace cap (borrowing from the future: the next trace, the mapper's or
// a target's, waits for them) and returns what the flow's next trace
// reserves.
func (m *Manager) chargeTrace(reserved, sent int) int {
	if m.cfg.TraceRate != nil && sent > reserved {
		m.cfg.TraceRate.Reserve(time.Now(), sent-reserved)
	}
	if sent <= 0 {
		return reserved
	}
	return sent
}
