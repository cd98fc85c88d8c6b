package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

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
	eng       *probe.Engine
	ld        *loader.Loader
	pg        *pinger.Pinger
	source    probe.Source
	ebpfState string
}

// startProbes picks the time source once: eBPF when asked for (or on auto)
// and the kernel allows it, else the engine's own kernel or user stamps. A
// host without CAP_BPF, or an old kernel, gets one clear log line and keeps
// running.
func startProbes(cfg *config, log *slog.Logger, reg prometheus.Registerer, g *graph.Graph, rate *plan.Rate) (*probes, error) {
	p := &probes{ebpfState: "off"}
	ts := cfg.Timestamps
	if ts == "auto" || ts == "ebpf" {
		ifaces := cfg.Ifaces
		if len(ifaces) == 0 {
			name, err := ifaceOf(cfg.GossipAddr)
			if err != nil {
				return nil, err
			}
			ifaces = []string{name}
		}
		lc := loader.DefaultConfig()
		lc.Ifaces, lc.PingPort, lc.Reflect, lc.HMAC = ifaces, cfg.PingPort, cfg.EBPFReflector, len(cfg.ProbeKey) > 0
		lc.Registerer, lc.Logger = reg, log.With("component", "loader")
		ld, err := loader.Load(lc)
		switch {
		case err == nil:
			p.ld = ld
			st := ld.Status()
			p.ebpfState = fmt.Sprintf("%s on %v, reflector %v", st.Mode, ifaces, cfg.EBPFReflector)
		case ts == "ebpf":
			return nil, fmt.Errorf("-timestamps=ebpf: %w", err)
		default:
			log.Warn("eBPF unavailable, using kernel or user timestamps instead", "err", err)
			p.ebpfState = "unavailable: " + err.Error()
		}
	}

	ec := probe.DefaultConfig()
	ec.LocalAddr, ec.PingPort = cfg.GossipAddr, cfg.PingPort
	ec.SrcPortStart, ec.SrcPortEnd = cfg.MapSrcPortStart, cfg.MapSrcPortEnd
	ec.Key, ec.Timestamps, ec.EBPF = cfg.ProbeKey, ts, p.ld != nil
	if p.ld != nil {
		ec.StampKick = p.ld.Kick
	}
	ec.Reflect = !(p.ld != nil && cfg.EBPFReflector)
	ec.Timeout = cfg.PingTimeout
	ec.Registerer, ec.Logger = reg, log.With("component", "probe")
	eng, err := probe.New(ec)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("probe engine: %w", err)
	}
	p.eng, p.source = eng, eng.Source()

	pc := pinger.DefaultConfig()
	pc.PeerInterval, pc.RouteInterval, pc.Timeout = cfg.PingPeerIntv, cfg.PingRouteIntv, cfg.PingTimeout
	pc.Local, pc.Registerer, pc.Logger = cfg.GossipAddr, reg, log.With("component", "pinger")
	pc.Rate = rate
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
		eg.Go(func() error { return p.ld.Run(ctx, p.eng.HandleStamp) })
	}
	eg.Go(func() error { return p.pg.Run(ctx) })
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

// ifaceOf names the interface that holds addr: where the probes leave and
// the acks arrive, so where the TC programs go.
func ifaceOf(addr netip.Addr) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == addr {
				return ifc.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no interface holds %s (set -gossipAddr to one of this host's addresses, or -ifaces)", addr)
}
