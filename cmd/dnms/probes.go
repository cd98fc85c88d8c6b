package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/pinger"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/probe"
)

// probes is the probe engine, the optional eBPF loader feeding it kernel
// stamps, and the pinger scheduling pings over the graph's routes.
type probes struct {
	eng *probe.Engine
	ld  *loader.Loader
	pg  *pinger.Pinger
	// rev learns the reverse routes from the peers (nil with -pingEveryPort).
	rev    *pinger.Reverse
	source probe.Source
	ebpf   ebpfHealth
	// targetStamps, set before run, takes the ring's target probe stamps
	// (the external target prober's).
	targetStamps func(probe.Stamp)
}

// startProbes picks the time source once: eBPF when asked for (or on auto)
// and the kernel allows it, else the engine's own kernel or user stamps. A
// host without CAP_BPF, or an old kernel, gets one clear log line and keeps
// running.
func startProbes(cfg *config, log *slog.Logger, reg prometheus.Registerer, g *graph.Graph, rate *plan.Rate) (*probes, error) {
	p := &probes{ebpf: ebpfHealth{Ifaces: []string{}}}
	ts := cfg.Timestamps
	var ebpfErr error
	if ts == "auto" || ts == "ebpf" {
		lc := loader.DefaultConfig()
		lc.Ifaces, lc.PingPort, lc.Reflect, lc.HMAC = cfg.Ifaces, cfg.PingPort, cfg.EBPFReflector, len(cfg.ProbeKey) > 0
		lc.Keyed = len(cfg.ProbeKey) > 0
		lc.Registerer, lc.Logger = reg, log.With("component", "loader")
		ld, err := loader.Load(lc)
		switch {
		case err == nil:
			p.ld = ld
			st := ld.Status()
			p.ebpf = ebpfHealth{Attached: true, Mode: st.Mode, Ifaces: st.Ifaces, Reflector: st.Reflect}
		case ts == "ebpf":
			return nil, fmt.Errorf("-timestamps=ebpf: %w", err)
		default:
			ebpfErr = err
			p.ebpf.Error = err.Error()
		}
	}

	ec := probe.DefaultConfig()
	ec.LocalAddr, ec.PingPort = cfg.GossipAddr, cfg.PingPort
	ec.SrcPortStart, ec.SrcPortEnd = cfg.MapSrcPortStart, cfg.MapSrcPortEnd
	ec.Key, ec.Timestamps, ec.EBPF = cfg.ProbeKey, ts, p.ld != nil
	if p.ld != nil {
		ec.StampKick = p.ld.Kick
	}
	// The userspace reflector stays on next to the kernel's: it answers
	// what the kernel reflector passes up (no route for the ack, a ping
	// arriving on an interface without the programs, and with a key what
	// it cannot authenticate).
	ec.Reflect = true
	if p.ld != nil && cfg.EBPFReflector && len(cfg.ProbeKey) > 0 {
		// Userspace answers and confirms the epoch the keyed kernel
		// reflector may then trust.
		ec.ConfirmEpoch = p.confirmEpoch(log)
	}
	ec.Timeout = cfg.PingTimeout
	ec.Registerer, ec.Logger = reg, log.With("component", "probe")
	eng, err := probe.New(ec)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("probe engine: %w", err)
	}
	p.eng, p.source = eng, eng.Source()
	if ebpfErr != nil {
		// One line: what is missing and what dnms uses instead.
		var missing []string
		if c, err := readCaps(); err == nil {
			missing = missingCaps(c.eff, ebpfCaps)
		}
		log.Warn(fmt.Sprintf("eBPF unavailable, using %s timestamps instead", p.source),
			"missingCapabilities", strings.Join(missing, ","), "err", ebpfErr)
	}

	pc := pinger.DefaultConfig()
	pc.PeerInterval, pc.RouteInterval, pc.Timeout = cfg.PingPeerIntv, cfg.PingRouteIntv, cfg.PingTimeout
	pc.Local, pc.Registerer, pc.Logger = cfg.GossipAddr, reg, log.With("component", "pinger")
	pc.Rate = rate
	pc.EveryPort = cfg.Scale.PingEveryPort
	if !pc.EveryPort {
		rc := pinger.DefaultReverseConfig()
		rc.Local, rc.Registerer, rc.Logger = cfg.GossipAddr, reg, log.With("component", "pinger")
		if p.rev, err = pinger.NewReverse(rc); err != nil {
			p.Close()
			return nil, fmt.Errorf("pinger: %w", err)
		}
		pc.Reverse = p.rev
	}
	if p.pg, err = pinger.New(pc, eng, g, g); err != nil {
		p.Close()
		return nil, fmt.Errorf("pinger: %w", err)
	}
	return p, nil
}

// run starts the engine, the ring buffer reader and the pinger in eg.
func (p *probes) run(ctx context.Context, eg *errgroup.Group) {
	eg.Go(func() error { return p.eng.Run(ctx) })
	if p.ld != nil {
		fn := p.eng.HandleStamp
		if ts := p.targetStamps; ts != nil {
			fn = func(s probe.Stamp) {
				if s.Kind == probe.StampTargetTx || s.Kind == probe.StampTargetRx {
					ts(s)
					return
				}
				p.eng.HandleStamp(s)
			}
		}
		eg.Go(func() error { return p.ld.Run(ctx, fn) })
	}
	eg.Go(func() error { return p.pg.Run(ctx) })
	if p.rev != nil {
		eg.Go(func() error { return p.rev.Run(ctx) })
	}
}

// Close detaches eBPF and closes the sockets.
func (p *probes) Close() {
	if p.eng != nil {
		p.eng.Close()
	}
	if p.ld != nil {
		p.ld.Close()
	}
}

// health is the eBPF part of /healthz; the interfaces follow link and route
// changes.
func (p *probes) health() ebpfHealth {
	h := p.ebpf
	if p.ld != nil {
		h.Ifaces = p.ld.Status().Ifaces
	}
	return h
}
