package targets

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/pathwatch"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/probe"
)

// Prober opens probe flows to targets (*probe.TargetProber).
type Prober interface {
	Open(kind probe.TargetKind, dst netip.AddrPort, flow int) (probe.TargetFlow, error)
}

// Tracer runs one Paris traceroute (*probe.Engine).
type Tracer interface {
	Trace(ctx context.Context, peer netip.Addr, srcPort uint16, maxTTL, maxSilent int) (probe.TraceResult, error)
	LocalAddr() netip.Addr
}

// Config configures a Manager.
type Config struct {
	// File is the targets file (-targets).
	File   string
	Prober Prober
	// Tracer and TraceSrcPorts trace targets with trace: true (flow i on
	// TraceSrcPorts[i mod len]); Paths receives the hop lists. Without a
	// Tracer, trace: true is ignored (logged).
	Tracer        Tracer
	TraceSrcPorts []uint16
	MaxTTL        int
	Paths         *pathwatch.Watcher
	// TraceRate, when set, is the agent's cap on trace probes
	// (-traceRate), shared with the mapper: each target trace reserves
	// the probes its flow's previous trace sent before it starts, and pays
	// for any it sent beyond that afterwards (traceBudget).
	TraceRate *plan.Rate
	// Resolve resolves host names; nil uses DefaultResolver.
	Resolve Resolver
	// Samples is how many recent samples are kept per target address.
	Samples int
	// Poll is how often the file is checked for changes.
	Poll       time.Duration
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DefaultConfig: 100 samples per address, the file checked every 2 s.
func DefaultConfig() Config {
	return Config{Samples: 100, Poll: 2 * time.Second, MaxTTL: 32}
}

// Manager runs the probes of the current target set.
type Manager struct {
	cfg Config
	log *slog.Logger
	met *metrics

	reloadMu sync.Mutex // one reload at a time
	mu       sync.Mutex
	running  map[string]*runner
	order    []string // names in file order
	ctx      context.Context
	stat     fileStamp
	pending  []Resolved // loaded before Run
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// New loads the file: a bad file at start is an error (there is no
// previous set to keep).
func New(cfg Config) (*Manager, error) {
	d := DefaultConfig()
	if cfg.Samples <= 0 {
		cfg.Samples = d.Samples
	}
	if cfg.Poll <= 0 {
		cfg.Poll = d.Poll
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = d.MaxTTL
	}
	if cfg.Resolve == nil {
		cfg.Resolve = DefaultResolver
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Prober == nil {
		return nil, errors.New("targets: Config.Prober is required")
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, met: newMetrics(), running: map[string]*runner{}}
	if cfg.Registerer != nil {
		if err := m.met.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	set, st, err := m.load(context.Background())
	m.count(err)
	if err != nil {
		return nil, err
	}
	m.stat = st
	m.pending = set
	return m, nil
}

// load reads and resolves the file.
func (m *Manager) load(ctx context.Context) ([]Resolved, fileStamp, error) {
	fi, err := os.Stat(m.cfg.File)
	if err != nil {
		return nil, fileStamp{}, err
	}
	set, err := Load(ctx, m.cfg.File, m.cfg.Resolve)
	return set, fileStamp{mod: fi.ModTime(), size: fi.Size()}, err
}

func (m *Manager) count(err error) {
	if err != nil {
		m.met.reloads.WithLabelValues("failure").Inc()
		m.met.lastReload.Set(0)
		return
	}
	m.met.reloads.WithLabelValues("success").Inc()
	m.met.lastReload.Set(1)
}

// Run probes the targets until ctx is done, reloading the file when it
// changes.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	set := m.pending
	m.pending = nil
	m.mu.Unlock()
	m.apply(set)
	t := time.NewTicker(m.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.stopAll()
			return ctx.Err()
		case <-t.C:
			fi, err := os.Stat(m.cfg.File)
			if err != nil {
				continue // mid-rename, or gone: keep the set
			}
			m.mu.Lock()
			changed := fi.ModTime() != m.stat.mod || fi.Size() != m.stat.size
			m.mu.Unlock()
			if changed {
				m.Reload()
			}
		}
	}
}

// Reload re-reads the file (SIGHUP, or a change). A bad file leaves the
// running set alone; the error (file:line) is logged once and returned.
func (m *Manager) Reload() error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.mu.Lock()
	ctx := m.ctx
	m.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	set, st, err := m.load(ctx)
	m.mu.Lock()
	if st.size != 0 || !st.mod.IsZero() {
		m.stat = st // a bad file is not re-read until it changes again
	}
	m.mu.Unlock()
	m.count(err)
	if err != nil {
		m.log.Error("targets file rejected, keeping the previous targets", "err", err.Error())
		return err
	}
	m.apply(set)
	m.log.Info("targets loaded", "file", m.cfg.File, "targets", len(set))
	return nil
}

// apply makes set the running set: unchanged targets keep running (and
// their statistics), changed ones restart, removed ones stop.
func (m *Manager) apply(set []Resolved) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil { // before Run: Run applies it
		m.pending = set
		return
	}
	// Stop what changed or went, all at once (a probe in flight ends with
	// its context), before starting the new set.
	byName := make(map[string]Resolved, len(set))
	for _, r := range set {
		byName[r.Name] = r
	}
	var stopped []*runner
	for name, old := range m.running {
		if nr, ok := byName[name]; !ok || !sameTarget(old.def, nr) {
			old.cancel()
			stopped = append(stopped, old)
		}
	}
	for _, old := range stopped {
		old.wg.Wait()
		name := old.def.Name
		m.met.forget(name)
		delete(m.running, name)
		if _, kept := byName[name]; !kept && m.cfg.Paths != nil {
			m.cfg.Paths.Forget(name)
		}
	}
	m.order = m.order[:0]
	for _, r := range set {
		m.order = append(m.order, r.Name)
		if m.running[r.Name] == nil {
			m.running[r.Name] = m.start(r)
		}
	}
	m.met.configured.Set(float64(len(m.running)))
}

func sameTarget(a, b Resolved) bool {
	a.Line, b.Line = 0, 0
	return a.Target == b.Target && slices.Equal(a.Addrs, b.Addrs)
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.running {
		r.cancel()
	}
	for _, r := range m.running {
		r.wg.Wait()
	}
}

// Status is one target as /v1/targets serves it.
type Status struct {
	Name                 string           `json:"name"`
	Host                 string           `json:"host"`
	Probe                probe.TargetKind `json:"probe"`
	Port                 uint16           `json:"port,omitempty"`
	Flows                int              `json:"flows"`
	Trace                bool             `json:"trace"`
	IntervalSeconds      float64          `json:"intervalSeconds"`
	TimeoutSeconds       float64          `json:"timeoutSeconds"`
	TraceIntervalSeconds float64          `json:"traceIntervalSeconds,omitempty"`
	Addrs                []AddrStatus     `json:"addrs"`
}

// Detail is Status with the recent samples (oldest first).
type Detail struct {
	Status
	Samples []Sample `json:"samples"`
}

// Targets returns every target's status in file order.
func (m *Manager) Targets() []Status {
	m.mu.Lock()
	rs := make([]*runner, 0, len(m.order))
	for _, n := range m.order {
		if r := m.running[n]; r != nil {
			rs = append(rs, r)
		}
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.status())
	}
	return out
}

// Target returns one target with its recent samples.
func (m *Manager) Target(name string) (Detail, bool) {
	m.mu.Lock()
	r := m.running[name]
	m.mu.Unlock()
	if r == nil {
		return Detail{}, false
	}
	d := Detail{Status: r.status(), Samples: []Sample{}}
	for _, a := range r.def.Addrs {
		d.Samples = append(d.Samples, r.stats[a].samples()...)
	}
	sort.SliceStable(d.Samples, func(i, j int) bool { return d.Samples[i].Time.Before(d.Samples[j].Time) })
	return d, true
}
