package plan

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Target carries out a plan and says what its routes taught it about racks.
// *mapper.Mapper implements it.
type Target interface {
	// SetPlan makes the probed peers exactly picks.
	SetPlan(picks []Pick)
	// Racks returns this host's first-hop router and the peers' as routes
	// show them (zero when unknown).
	Racks() (self netip.Addr, peers map[netip.Addr]netip.Addr)
}

// RackProber tells whether a peer is behind this host's first-hop router
// without tracing it fully. *mapper.Mapper implements it (RackOf).
type RackProber interface {
	RackOf(ctx context.Context, peer netip.Addr) (rack netip.Addr, same bool, err error)
}

// Runner keeps a Target on the current plan: it recomputes the plan when a
// member joins or leaves, when the rotation epoch ends and, every 10 s,
// with the racks the target's routes revealed since. Racks once learned
// are remembered, so a peer rotated out stays known as a rack peer or not.
//
// Select is a pure function of the members, their racks and the epoch, and
// costs O(N log N) at N members: the runner re-runs it only when one of
// those changed, and at most once per gap however fast members come (a
// cluster starting at once is N joins per agent).
type Runner struct {
	cfg     Config
	target  Target
	log     *slog.Logger
	refresh time.Duration
	gap     time.Duration // least time between updates woken by a change
	now     func() time.Time

	mu       sync.Mutex
	members  map[string]Member
	racks    map[netip.Addr]netip.Addr
	selfRack netip.Addr
	picks    []Pick
	wake     chan struct{}
	routers  *RouterBudget
	checked  map[netip.Addr]bool // asked with RackOf: not a rack peer unless racks says so
	tries    map[netip.Addr]int
	// pending: members to ask RackOf about, in the order they came (a
	// member not answering goes to the back); asked holds the addresses
	// of the current members.
	pending []netip.Addr
	asked   map[netip.Addr]int
	found   chan struct{}
	// gen counts changes of Select's inputs (members, racks, self's
	// rack); planned is the gen and epoch the current picks were
	// selected for.
	gen, plannedGen uint64
	plannedEpoch    int64
	planned         bool
}

// ShareRouterBudget makes the runner tell b the cluster size on every
// update, so this agent takes its share of the per-router target.
func (r *Runner) ShareRouterBudget(b *RouterBudget) {
	r.mu.Lock()
	r.routers = b
	r.mu.Unlock()
}

// SetUpdateGap sets the least time between two updates woken by membership
// or rack changes (default 1 s; 0: none). Emulations of many agents in one
// process raise it.
func (r *Runner) SetUpdateGap(d time.Duration) {
	r.mu.Lock()
	r.gap = max(d, 0)
	r.mu.Unlock()
}

// NewRunner returns a Runner for cfg (validated) with self at addr.
func NewRunner(cfg Config, self netip.Addr, t Target, log *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{
		cfg: cfg, target: t, log: log, refresh: 10 * time.Second, gap: time.Second, now: time.Now,
		members: map[string]Member{cfg.Self: {Name: cfg.Self, Addr: self.Unmap()}},
		racks:   make(map[netip.Addr]netip.Addr),
		checked: make(map[netip.Addr]bool),
		tries:   make(map[netip.Addr]int),
		asked:   make(map[netip.Addr]int),
		wake:    make(chan struct{}, 1),
		found:   make(chan struct{}, 1),
	}
	return r, nil
}

// Join adds or updates a member.
func (r *Runner) Join(name string, addr netip.Addr) {
	m := Member{Name: name, Addr: addr.Unmap()}
	r.mu.Lock()
	if old, ok := r.members[name]; !ok || old != m {
		if ok {
			r.asked[old.Addr]--
		}
		r.members[name] = m
		r.asked[m.Addr]++
		if name != r.cfg.Self {
			r.pending = append(r.pending, m.Addr)
		}
		r.gen++
	}
	r.mu.Unlock()
	r.poke()
}

// Leave removes a member.
func (r *Runner) Leave(name string) {
	r.mu.Lock()
	if m, ok := r.members[name]; ok && name != r.cfg.Self {
		delete(r.members, name)
		if r.asked[m.Addr]--; r.asked[m.Addr] <= 0 {
			delete(r.asked, m.Addr)
		}
		r.gen++
	}
	r.mu.Unlock()
	r.poke()
}

func (r *Runner) poke() {
	for _, ch := range []chan struct{}{r.wake, r.found} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Plan returns the current picks.
func (r *Runner) Plan() []Pick {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.picks)
}

// Update recomputes the plan now and hands it to the target if it changed;
// it returns the time of the next epoch boundary.
func (r *Runner) Update() time.Time {
	self, racks := r.target.Racks()
	now := r.now()
	epoch, end := Epoch(r.cfg.Self, r.cfg.Rotate, now)
	r.mu.Lock()
	r.learnRacks(self, racks)
	if r.planned && r.gen == r.plannedGen && epoch == r.plannedEpoch {
		// Same members, racks and epoch: Select would return the picks
		// already handed over.
		n, routers := len(r.members), r.routers
		r.mu.Unlock()
		if routers != nil {
			routers.SetMembers(n)
		}
		return end
	}
	gen := r.gen
	ms := make([]Member, 0, len(r.members))
	for _, m := range r.members {
		m.Rack = r.racks[m.Addr]
		ms = append(ms, m)
	}
	c := r.cfg
	c.SelfRack = r.selfRack
	routers := r.routers
	r.mu.Unlock()
	if routers != nil {
		routers.SetMembers(len(ms))
	}
	picks := Select(c, ms, now)
	r.mu.Lock()
	r.plannedGen, r.plannedEpoch, r.planned = gen, epoch, true
	changed := !slices.Equal(picks, r.picks)
	if changed {
		r.picks = picks
	}
	r.mu.Unlock()
	if changed {
		r.target.SetPlan(picks)
		r.log.Debug("probe plan", "peers", len(picks), "members", len(ms), "budget", c.Budget)
	}
	return end
}

// learnRacks merges what the target's routes showed; r.mu held.
func (r *Runner) learnRacks(self netip.Addr, racks map[netip.Addr]netip.Addr) {
	if self.IsValid() && self != r.selfRack {
		r.selfRack = self
		r.gen++
	}
	for a, rk := range racks {
		if r.racks[a] != rk {
			r.racks[a] = rk
			r.gen++
		}
	}
}

// Run keeps the target on the plan until ctx is done. When the target is
// a RackProber and the cluster is larger than the budget, it also asks it,
// one member at a time, which members share this host's rack, so that rack
// peers are probed from the start rather than when rotation first brings
// them in.
func (r *Runner) Run(ctx context.Context) error {
	if rp, ok := r.target.(RackProber); ok {
		done := make(chan struct{})
		go func() { defer close(done); r.discover(ctx, rp) }()
		defer func() { <-done }()
	}
	for {
		end := r.Update()
		last := time.Now()
		wait := min(r.refresh, max(time.Until(end), time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.wake:
			// Let a burst of changes (a join storm) gather: one Select
			// for all of them, at most one per gap.
			r.mu.Lock()
			gap := r.gap
			r.mu.Unlock()
			t.Reset(time.Until(last.Add(gap)))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		case <-t.C:
		}
		t.Stop()
	}
}

// discover asks rp about every member whose rack is not known, while the
// cluster is larger than the budget.
func (r *Runner) discover(ctx context.Context, rp RackProber) {
	for ctx.Err() == nil {
		next, ok := r.unchecked()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-r.found:
			case <-time.After(r.refresh):
			}
			continue
		}
		rack, same, err := rp.RackOf(ctx, next)
		r.mu.Lock()
		// No answer (the member may not run dnms yet): ask again after the
		// others, at most three times.
		r.tries[next]++
		r.checked[next] = err == nil || r.tries[next] >= 3
		if !r.checked[next] {
			r.pending = append(r.pending, next)
		}
		if err == nil && same {
			if r.racks[next] != rack {
				r.racks[next] = rack
				r.gen++
			}
			if !r.selfRack.IsValid() {
				r.selfRack = rack
				r.gen++
			}
		}
		r.mu.Unlock()
		if err == nil && same {
			r.poke()
		}
	}
}

// unchecked returns a member to ask about, if the plan needs racks (the
// cluster exceeds the budget) and one is left: the first pending one that
// is still a member and whose rack is not known. (A scan of every member
// for each question was O(N²) per agent.)
func (r *Runner) unchecked() (netip.Addr, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg.Budget == 0 || len(r.members)-1 <= r.cfg.Budget {
		return netip.Addr{}, false
	}
	for len(r.pending) > 0 {
		a := r.pending[0]
		r.pending = r.pending[1:]
		if r.asked[a] > 0 && !r.checked[a] && !r.racks[a].IsValid() {
			return a, true
		}
	}
	return netip.Addr{}, false
}
