package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/mapper"
	"github.com/dnms/dnms/internal/pathwatch"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/probe"
	"github.com/dnms/dnms/internal/targets"
)

// targetParts are the path watch (peer routes and traced targets) and, with
// -targets, the external target prober and manager.
type targetParts struct {
	paths  *pathwatch.Watcher
	prober *probe.TargetProber
	mgr    *targets.Manager
	log    *slog.Logger
}

// The target prober takes eBPF stamps from the probes' loader when there is
// one (pr.targetStamps routes the ring's target stamps to it), and target
// traces take their probes from the agent's trace cap.
func startTargets(cfg *config, log *slog.Logger, reg prometheus.Registerer, pr *probes, traceRate *plan.Rate) (*targetParts, error) {
	eng := pr.eng
	t := &targetParts{log: log}
	pc := pathwatch.DefaultConfig()
	pc.History, pc.StateDir = cfg.PathHistory, cfg.StateDir
	pc.Registerer, pc.Logger = reg, log.With("component", "pathwatch")
	var err error
	if t.paths, err = pathwatch.New(pc); err != nil {
		return nil, fmt.Errorf("path watch: %w", err)
	}
	if cfg.TargetsFile == "" {
		return t, nil
	}
	tc := probe.DefaultTargetConfig()
	tc.LocalAddr, tc.Timestamps, tc.Logger = cfg.GossipAddr, cfg.Timestamps, log.With("component", "targets")
	if pr.ld != nil {
		tc.EBPF = pr.ld
	}
	if t.prober, err = probe.NewTargetProber(tc); err != nil {
		return nil, err
	}
	pr.targetStamps = t.prober.HandleStamp
	mc := targets.DefaultConfig()
	mc.File, mc.Prober, mc.Tracer, mc.Paths = cfg.TargetsFile, t.prober, eng, t.paths
	mc.TraceRate = traceRate
	for p := int(cfg.MapSrcPortStart); p <= int(cfg.MapSrcPortEnd); p++ {
		mc.TraceSrcPorts = append(mc.TraceSrcPorts, uint16(p))
	}
	mc.Registerer, mc.Logger = reg, log.With("component", "targets")
	if t.mgr, err = targets.New(mc); err != nil {
		t.prober.Close()
		return nil, err
	}
	return t, nil
}

// run starts the manager and reloads the targets file on SIGHUP.
func (t *targetParts) run(ctx context.Context, eg *errgroup.Group) {
	if t.mgr == nil {
		return
	}
	eg.Go(func() error { return t.mgr.Run(ctx) })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	eg.Go(func() error {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				t.mgr.Reload() // logs and counts a bad file itself
			}
		}
	})
}

func (t *targetParts) Close() {
	if t.prober != nil {
		t.prober.Close()
	}
	t.paths.Close()
}

// deps adds the targets and paths documents to the API.
func (t *targetParts) deps(d *api.Deps) {
	d.Paths = func(target string) any { return t.paths.Histories(target) }
	if t.mgr != nil {
		d.Targets = func() any { return t.mgr.Targets() }
		d.Target = func(name string) (any, bool) { return t.mgr.Target(name) }
	}
}

// sink feeds every route the mapper stores to the path watch too.
func (t *targetParts) sink(s mapper.Sink) mapper.Sink { return pathSink{Sink: s, w: t.paths} }

type pathSink struct {
	mapper.Sink
	w *pathwatch.Watcher
}

func (s pathSink) SetRoute(key graph.RouteKey, hops []graph.Hop) (string, *graph.PathChange) {
	id, ch := s.Sink.SetRoute(key, hops)
	s.w.ObservePath(pathwatch.Flow{Target: key.Dst.String(), Src: key.Src, Dst: key.Dst, SrcPort: key.SrcPort}, hops)
	return id, ch
}

// discovery lists the aggregator's members as Prometheus HTTP SD target
// groups: every agent's API address, labelled with its node name.
func discovery(agg *aggregator.Aggregator) func() []api.SDGroup {
	return func() []api.SDGroup {
		var out []api.SDGroup
		for _, m := range agg.Status() {
			u, err := url.Parse(m.URL)
			if err != nil || u.Host == "" {
				continue
			}
			out = append(out, api.SDGroup{Targets: []string{u.Host},
				Labels: map[string]string{"__meta_dnms_node": m.Name, "__meta_dnms_stream_state": m.State}})
		}
		return out
	}
}
