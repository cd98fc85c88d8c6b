package plan

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate caps a kind of probe (-probeRate pings/s, -traceRate trace probes/s)
// with a token bucket holding one second of probes. Callers pass the time,
// so tests drive it with a fake clock. It remembers when it last held a
// caller back: the agent reports that in /healthz and a metric, because
// then the cap, not the configured interval, sets the pace.
type Rate struct {
	lim   *rate.Limiter
	burst int

	mu        sync.Mutex
	stretched time.Time // last time the cap delayed or deferred a probe
	held      int64     // probes delayed or deferred, ever
}

// NewRate returns a cap of perSecond probes per second, with a burst of
// one second's worth (at least one probe).
func NewRate(perSecond float64) *Rate {
	b := max(int(perSecond), 1)
	return &Rate{lim: rate.NewLimiter(rate.Limit(perSecond), b), burst: b}
}

// Take takes as many of n probes as the bucket allows at now and returns
// how many; the rest should wait for a later turn.
func (r *Rate) Take(now time.Time, n int) int {
	if n <= 0 {
		return 0
	}
	k := min(n, int(r.lim.TokensAt(now)))
	if k > 0 && !r.lim.AllowN(now, k) {
		k = 0
	}
	if k < n {
		r.hold(now, n-k)
	}
	return k
}

// Reserve takes n probes at now, borrowing from the future, and returns how
// long the caller must wait before sending them.
func (r *Rate) Reserve(now time.Time, n int) time.Duration {
	var d time.Duration
	for n > 0 {
		k := min(n, r.burst)
		d = max(d, r.lim.ReserveN(now, k).DelayFrom(now))
		n -= k
	}
	if d > 0 {
		r.hold(now, 1)
	}
	return d
}

func (r *Rate) hold(now time.Time, n int) {
	r.mu.Lock()
	r.stretched = now
	r.held += int64(n)
	r.mu.Unlock()
}

// Stretched reports whether the cap held back a probe in the window before
// now, and how many probes it has held back in all.
func (r *Rate) Stretched(now time.Time, window time.Duration) (bool, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.stretched.IsZero() && now.Sub(r.stretched) < window, r.held
}

// RouterBudget caps the TTL-expired answers one agent requests from each
// router: every trace probe expected to expire at a known router takes a
// token from that router's bucket. The cap is a cluster-wide target per
// router (-traceRouterRate) shared by the members: each agent takes
// target/members, so that even if every agent's routes cross one router,
// the router answers at most target per second. Until SetMembers is
// called the agent takes the whole target.
type RouterBudget struct {
	target  float64
	mu      sync.Mutex
	share   float64
	routers map[string]*Rate
}

// NewRouterBudget returns a budget of target answers per second per router
// for the whole cluster.
func NewRouterBudget(target float64) *RouterBudget {
	return &RouterBudget{target: target, share: target, routers: make(map[string]*Rate)}
}

// SetMembers sets the cluster size the target is shared by.
func (b *RouterBudget) SetMembers(n int) {
	share := b.target / float64(max(n, 1))
	b.mu.Lock()
	defer b.mu.Unlock()
	if share == b.share {
		return
	}
	b.share = share
	clear(b.routers) // new buckets at the new share
}

// PerRouter returns this agent's share: answers per second per router.
func (b *RouterBudget) PerRouter() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.share
}

// Reserve takes one answer from each router in routers (a router listed
// twice takes two) and returns how long to wait before sending.
func (b *RouterBudget) Reserve(now time.Time, routers []string) time.Duration {
	count := make(map[string]int, len(routers))
	for _, r := range routers {
		count[r]++
	}
	var d time.Duration
	b.mu.Lock()
	defer b.mu.Unlock()
	for r, n := range count {
		rt := b.routers[r]
		if rt == nil {
			rt = NewRate(b.share)
			b.routers[r] = rt
		}
		d = max(d, rt.Reserve(now, n))
	}
	return d
}

// Stretched reports whether any router's budget delayed a probe in the
// window before now.
func (b *RouterBudget) Stretched(now time.Time, window time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.routers {
		if s, _ := r.Stretched(now, window); s {
			return true
		}
	}
	return false
}
