package pathwatch

import (
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
)

// Config configures a Watcher.
type Config struct {
	// History bounds the distinct paths and the change events kept per
	// flow (-pathHistory).
	History int
	// StateDir, when set, is where paths.json survives a restart
	// (-stateDir). Empty writes nothing.
	StateDir string
	// Window is how many samples after a change the RTT and loss verdict
	// waits for, compared with as many before it.
	Window int
	// HopSamples bounds the RTT samples kept per hop of a path.
	HopSamples int
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// DefaultConfig: 10 paths and events per flow, a 5-sample window, nothing on disk.
func DefaultConfig() Config {
	return Config{History: 10, Window: 5, HopSamples: 64}
}

// Flow names one traced flow. Target is the target's name for external
// targets and the peer's address for peer routes.
type Flow struct {
	Target  string     `json:"target"`
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	SrcPort uint16     `json:"srcPort"`
}

// Hop is one position of a path with its RTT percentiles over the traces
// that saw the path. A silent hop has no addr.
type Hop struct {
	Addr    netip.Addr `json:"addr,omitzero"`
	Samples int        `json:"samples"`
	RTTP50  float64    `json:"rttP50Seconds"`
	RTTP99  float64    `json:"rttP99Seconds"`
	rtts    []float64  // seconds, ring
	next    int
}

// Path is one distinct hop list a flow took.
type Path struct {
	ID        string    `json:"id"`
	Hops      []Hop     `json:"hops"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
	Traces    int       `json:"traces"`
	// Probes and Lost count the end-to-end samples seen while the path
	// was current; Loss is Lost/Probes.
	Probes int     `json:"probes"`
	Lost   int     `json:"lost"`
	Loss   float64 `json:"loss"`
}

// Verdict says whether a change made the path worse.
type Verdict struct {
	Worse    bool     `json:"worse"`
	Better   bool     `json:"better"`
	Pending  bool     `json:"pending"`
	Reasons  []string `json:"reasons"`
	HopDelta int      `json:"hopDelta"`
	// RTT p50 (seconds) and loss over Window samples before and after.
	RTTP50Before float64 `json:"rttP50BeforeSeconds"`
	RTTP50After  float64 `json:"rttP50AfterSeconds"`
	LossBefore   float64 `json:"lossBefore"`
	LossAfter    float64 `json:"lossAfter"`
}

// Change is one path change of a flow.
type Change struct {
	Time    time.Time    `json:"time"`
	Flow    Flow         `json:"flow"`
	OldPath string       `json:"oldPath"`
	NewPath string       `json:"newPath"`
	OldHops []netip.Addr `json:"oldHops"`
	NewHops []netip.Addr `json:"newHops"`
	Verdict Verdict      `json:"verdict"`
	// before: the window of samples before the change; after: samples
	// after it, until the verdict is final.
	before, after []sample
	counted       bool
}

type sample struct {
	RTT  float64 `json:"rttSeconds"`
	Lost bool    `json:"lost"`
}

// History is one flow's record, as /v1/paths serves it.
type History struct {
	Flow    Flow     `json:"flow"`
	Current string   `json:"current"`
	Paths   []Path   `json:"paths"`
	Changes []Change `json:"changes"`
}

type flowState struct {
	flow    Flow
	current string
	paths   map[string]*Path
	changes []*Change
	recent  []sample // last Window end-to-end samples on the current path
}

// Watcher holds the path history of every flow. Safe for concurrent use.
type Watcher struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	mu    sync.Mutex
	flows map[Flow]*flowState
	dirty bool

	changesTotal *prometheus.CounterVec
	saveErrors   prometheus.Counter
}

// New makes a Watcher and, with a StateDir, loads the saved history.
func New(cfg Config) (*Watcher, error) {
	d := DefaultConfig()
	if cfg.History <= 0 {
		cfg.History = d.History
	}
	if cfg.Window <= 0 {
		cfg.Window = d.Window
	}
	if cfg.HopSamples <= 0 {
		cfg.HopSamples = d.HopSamples
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watcher{cfg: cfg, log: cfg.Logger, now: cfg.Now, flows: map[Flow]*flowState{}}
	if w.now == nil {
		w.now = time.Now
	}
	w.changesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnms_path_change_verdicts_total",
		Help: "Path changes of traced flows (peer routes and traced targets) by target (name, or peer address) and verdict (worse, better, same), counted once the verdict is final. dnms_path_changes_total{peer} counts the mapper's raw changes.",
	}, []string{"target", "verdict"})
	w.saveErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dnms_path_state_save_errors_total",
		Help: "Failed writes of the path history to -stateDir.",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.changesTotal, w.saveErrors} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	if cfg.StateDir != "" {
		if err := w.load(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// pathID is the hop list, comma-separated; a silent hop is "*".
func pathID(hops []graph.Hop) string {
	var b strings.Builder
	for i, h := range hops {
		if i > 0 {
			b.WriteByte(',')
		}
		if h.Addr.IsValid() {
			b.WriteString(h.Addr.String())
		} else {
			b.WriteByte('*')
		}
	}
	return b.String()
}

// sameButSilent: the hop lists have one length and differ only where one
// of them has a silent hop.
func sameButSilent(a []Hop, b []graph.Hop) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Addr.IsValid() && b[i].Addr.IsValid() && a[i].Addr != b[i].Addr {
			return false
		}
	}
	return true
}

func addrs(p *Path) []netip.Addr {
	out := make([]netip.Addr, len(p.Hops))
	for i, h := range p.Hops {
		out[i] = h.Addr
	}
	return out
}

// ObservePath records one trace of flow that took hops (endpoints
// included, hop RTTs as the tracer measured them). The last hop's RTT is
// also an end-to-end sample of the path.
func (w *Watcher) ObservePath(f Flow, hops []graph.Hop) *Change {
	if len(hops) == 0 {
		return nil
	}
	now := w.now()
	id := pathID(hops)
	w.mu.Lock()
	defer w.mu.Unlock()
	fs := w.flows[f]
	if fs == nil {
		fs = &flowState{flow: f, paths: map[string]*Path{}}
		w.flows[f] = fs
	}
	// A router that did not answer this once ("*" where the current path
	// has an address, or the reverse) is no path change.
	if cur := fs.paths[fs.current]; cur != nil && id != cur.ID && sameButSilent(cur.Hops, hops) {
		id = cur.ID
	}
	p := fs.paths[id]
	if p == nil {
		p = &Path{ID: id, FirstSeen: now, Hops: make([]Hop, len(hops))}
		for i, h := range hops {
			p.Hops[i].Addr = h.Addr
		}
		fs.paths[id] = p
		w.trimPaths(fs, id)
	}
	p.LastSeen = now
	p.Traces++
	for i, h := range hops {
		if h.RTT > 0 && i > 0 {
			w.addHopRTT(&p.Hops[i], secs(h.RTT))
		}
	}
	var ch *Change
	if fs.current != "" && fs.current != id {
		ch = w.change(fs, p, now)
	}
	fs.current = id
	if last := hops[len(hops)-1]; last.RTT > 0 {
		w.sampleLocked(fs, sample{RTT: secs(last.RTT)})
	}
	if ch != nil {
		w.dirty = true
		w.saveLocked()
		c := *ch
		return &c
	}
	return nil
}

// ObserveSample records one end-to-end probe of flow's current path
// (external targets: the target's probes on that flow). A lost probe
// counts towards the path's loss.
func (w *Watcher) ObserveSample(f Flow, rtt time.Duration, lost bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fs := w.flows[f]
	if fs == nil || fs.current == "" {
		return
	}
	s := sample{Lost: lost}
	if !lost {
		s.RTT = secs(rtt)
	}
	w.sampleLocked(fs, s)
}

func (w *Watcher) sampleLocked(fs *flowState, s sample) {
	p := fs.paths[fs.current]
	p.Probes++
	if s.Lost {
		p.Lost++
	}
	p.Loss = float64(p.Lost) / float64(p.Probes)
	fs.recent = append(fs.recent, s)
	if len(fs.recent) > w.cfg.Window {
		fs.recent = fs.recent[len(fs.recent)-w.cfg.Window:]
	}
	if n := len(fs.changes); n > 0 {
		c := fs.changes[n-1]
		if c.Verdict.Pending && c.NewPath == fs.current {
			c.after = append(c.after, s)
			if len(c.after) >= w.cfg.Window {
				w.judge(c, false)
				w.count(c)
				w.dirty = true
				w.saveLocked()
			}
		}
	}
}

// change starts a change event from the flow's current path to p.
func (w *Watcher) change(fs *flowState, p *Path, now time.Time) *Change {
	old := fs.paths[fs.current]
	// A pending change superseded by this one is judged on what it has.
	if n := len(fs.changes); n > 0 && fs.changes[n-1].Verdict.Pending {
		w.judge(fs.changes[n-1], true)
		w.count(fs.changes[n-1])
	}
	c := &Change{Time: now, Flow: fs.flow, OldPath: old.ID, NewPath: p.ID, OldHops: addrs(old), NewHops: addrs(p),
		before: slices.Clone(fs.recent)}
	c.Verdict.HopDelta = len(p.Hops) - len(old.Hops)
	c.Verdict.Pending = true
	w.judge(c, false)
	fs.changes = append(fs.changes, c)
	if len(fs.changes) > w.cfg.History {
		fs.changes = fs.changes[len(fs.changes)-w.cfg.History:]
	}
	fs.recent = nil
	w.log.Info("path change", "target", fs.flow.Target, "dst", fs.flow.Dst, "srcPort", fs.flow.SrcPort,
		"oldPath", old.ID, "newPath", p.ID, "hopDelta", c.Verdict.HopDelta)
	return c
}

// judge sets c's verdict from what is known; final once Window samples
// after the change are in (or force).
func (w *Watcher) judge(c *Change, force bool) {
	v := &c.Verdict
	v.Reasons = v.Reasons[:0]
	v.Worse, v.Better = false, false
	if v.HopDelta > 0 {
		v.Worse = true
		v.Reasons = append(v.Reasons, "more hops")
	} else if v.HopDelta < 0 {
		v.Better = true
		v.Reasons = append(v.Reasons, "fewer hops")
	}
	v.RTTP50Before, v.LossBefore = summary(c.before)
	v.RTTP50After, v.LossAfter = summary(c.after)
	final := force || len(c.after) >= w.cfg.Window
	if final && len(c.before) > 0 && len(c.after) > 0 {
		b, a := v.RTTP50Before, v.RTTP50After
		switch {
		case b > 0 && a > b*1.2 && a-b > 0.0005:
			v.Worse = true
			v.Reasons = append(v.Reasons, "higher RTT p50")
		case a > 0 && b > a*1.2 && b-a > 0.0005:
			v.Better = true
			v.Reasons = append(v.Reasons, "lower RTT p50")
		}
		switch {
		case v.LossAfter > v.LossBefore+0.01:
			v.Worse = true
			v.Reasons = append(v.Reasons, "more loss")
		case v.LossBefore > v.LossAfter+0.01:
			v.Better = true
			v.Reasons = append(v.Reasons, "less loss")
		}
	}
	if v.Worse {
		v.Better = false // one count against the new path outweighs the others
	}
	v.Pending = !final
	if final {
		c.before, c.after = nil, nil
	}
}

func (w *Watcher) count(c *Change) {
	if c.counted {
		return
	}
	c.counted = true
	verdict := "same"
	switch {
	case c.Verdict.Worse:
		verdict = "worse"
	case c.Verdict.Better:
		verdict = "better"
	}
	w.changesTotal.WithLabelValues(c.Flow.Target, verdict).Inc()
}

// summary is the RTT p50 (seconds, answered samples) and loss of ss.
func summary(ss []sample) (p50, loss float64) {
	if len(ss) == 0 {
		return 0, 0
	}
	var rtts []float64
	lost := 0
	for _, s := range ss {
		if s.Lost {
			lost++
		} else {
			rtts = append(rtts, s.RTT)
		}
	}
	return percentile(rtts, 0.5), float64(lost) / float64(len(ss))
}

func (w *Watcher) addHopRTT(h *Hop, v float64) {
	if len(h.rtts) < w.cfg.HopSamples {
		h.rtts = append(h.rtts, v)
	} else {
		h.rtts[h.next] = v
		h.next = (h.next + 1) % len(h.rtts)
	}
	h.Samples++
	h.RTTP50 = percentile(h.rtts, 0.5)
	h.RTTP99 = percentile(h.rtts, 0.99)
}

// trimPaths drops the least recently seen paths beyond History, never keep.
func (w *Watcher) trimPaths(fs *flowState, keep string) {
	for len(fs.paths) > w.cfg.History {
		var oldest *Path
		for id, p := range fs.paths {
			if id == keep || id == fs.current {
				continue
			}
			if oldest == nil || p.LastSeen.Before(oldest.LastSeen) {
				oldest = p
			}
		}
		if oldest == nil {
			return
		}
		delete(fs.paths, oldest.ID)
	}
}

// Histories returns the history of every flow whose target is target (all
// flows when empty), sorted by target, destination and source port.
func (w *Watcher) Histories(target string) []History {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := []History{}
	for _, fs := range w.flows {
		if target != "" && fs.flow.Target != target {
			continue
		}
		out = append(out, fs.snapshot())
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Flow, out[j].Flow
		if a.Target != b.Target {
			return a.Target < b.Target
		}
		if a.Dst != b.Dst {
			return a.Dst.Less(b.Dst)
		}
		return a.SrcPort < b.SrcPort
	})
	return out
}

// Current is the hop list of flow's current path (nil if never traced).
func (w *Watcher) Current(f Flow) []netip.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	if fs := w.flows[f]; fs != nil && fs.current != "" {
		return addrs(fs.paths[fs.current])
	}
	return nil
}

// Forget drops every flow of target (a target removed from the file).
func (w *Watcher) Forget(target string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for f := range w.flows {
		if f.Target == target {
			delete(w.flows, f)
			w.dirty = true
		}
	}
	w.changesTotal.DeletePartialMatch(prometheus.Labels{"target": target})
}

func (fs *flowState) snapshot() History {
	h := History{Flow: fs.flow, Current: fs.current, Paths: make([]Path, 0, len(fs.paths)), Changes: make([]Change, 0, len(fs.changes))}
	for _, p := range fs.paths {
		c := *p
		c.Hops = slices.Clone(p.Hops)
		for i := range c.Hops {
			c.Hops[i].rtts = nil
		}
		h.Paths = append(h.Paths, c)
	}
	sort.Slice(h.Paths, func(i, j int) bool { return h.Paths[i].FirstSeen.Before(h.Paths[j].FirstSeen) })
	for _, c := range fs.changes {
		cc := *c
		cc.Verdict.Reasons = append([]string{}, c.Verdict.Reasons...)
		cc.before, cc.after = nil, nil
		h.Changes = append(h.Changes, cc)
	}
	return h
}

func secs(d time.Duration) float64 { return d.Seconds() }

// percentile of vs (nearest rank); vs is not modified.
func percentile(vs []float64, q float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
