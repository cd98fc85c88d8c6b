package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Peer is a compatible member as handlers see it.
type Peer struct {
	Name       string
	Addr       netip.Addr // advertised address: the one traced and pinged
	GossipPort uint16
	Role       string
	HTTPPort   uint16
	// HTTPAddr is where the member's API listens (its -httpAdvertise);
	// Addr when the member did not advertise one.
	HTTPAddr netip.Addr
	PingPort uint16
	Version  string
	// Instance is the member process's start time in Unix nanoseconds (0
	// when it does not advertise one): it changes when the member restarts.
	Instance uint64
	// Leaving: the member announced a graceful leave (NodeMeta.Leaving).
	Leaving bool
	// Failed: gossip declared the member dead (it did not announce a
	// leave) and Config.FailedGrace has not ended: it is still reported,
	// so still probed, because a fault that cuts its gossip is exactly
	// what dnms must go on measuring.
	Failed bool
}

// Handler receives membership changes, in order, from one goroutine. A
// handler must not block for long: it delays every later event.
type Handler interface {
	PeerJoin(Peer)
	PeerLeave(Peer)
}

// Restarter is an optional Handler method: PeerRestart is called when a
// known member came back as a new process (its advertised Instance changed)
// without memberlist having reported it gone, so it got no PeerLeave and
// PeerJoin. Samples taken across the restart describe the member's
// downtime, not the network.
type Restarter interface {
	PeerRestart(Peer)
}

// Cluster is this node's membership in the gossip pool.
type Cluster struct {
	cfg       Config
	log       *slog.Logger
	met       *metrics
	local     NodeMeta
	encoded   atomic.Pointer[[]byte] // NodeMeta's answer
	boundPort atomic.Int32           // the gossip port bound, set by Start

	lifeMu   sync.Mutex // serialises Leave and Shutdown
	mu       sync.Mutex
	ml       *memberlist.Memberlist
	ping     *pingDelegate // joins restarted members (restart.go)
	handlers []handlerEntry
	closed   bool

	q        queue
	done     chan struct{} // closed when the dispatcher exits
	stopOnce sync.Once
	stop     chan struct{}

	joinAttempts atomic.Int64
	// prior: the members the state file listed at Start, before this
	// process's own events rewrote it (Run joins them).
	prior []string

	// Dispatcher-owned state.
	known map[string]Peer // reported (compatible) members, self included
	// knownMu guards known's writes (by the dispatcher, which reads it
	// without the lock) against Members.
	knownMu sync.RWMutex
	ignored map[string]string  // name -> reason already logged
	failed  map[string]failure // members in their failed-peer grace
	failGen uint64
	// stateDirty: a member came or went since the state file was saved.
	stateDirty bool
}

type handlerEntry struct {
	h           Handler
	includeSelf bool
}

// New validates cfg and registers the metrics. Nothing listens until Start.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("cluster: register metrics: %w", err)
	}
	local := NodeMeta{Role: cfg.Role, HTTPPort: cfg.HTTPPort, PingPort: cfg.PingPort, Version: cfg.Version, HTTPAddr: cfg.HTTPAddr,
		Instance: uint64(time.Now().UnixNano())}
	enc, err := local.Encode()
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{
		cfg:     cfg,
		log:     cfg.Logger, // the caller names the component
		met:     met,
		local:   local,
		done:    make(chan struct{}),
		stop:    make(chan struct{}),
		known:   map[string]Peer{},
		ignored: map[string]string{},
		failed:  map[string]failure{},
	}
	c.encoded.Store(&enc)
	c.q.init()
	return c, nil
}

// Name is this node's name.
func (c *Cluster) Name() string { return c.cfg.NodeName }

// AddHandler registers h for joins and leaves of other members; this node is
// not reported. Registered after Start, h first receives a join for every
// member already known.
func (c *Cluster) AddHandler(h Handler) { c.addHandler(h, false) }

// AddHandlerWithSelf is AddHandler, but h is also told about this node (the
// aggregator subscribes to its own agent too).
func (c *Cluster) AddHandlerWithSelf(h Handler) { c.addHandler(h, true) }

func (c *Cluster) addHandler(h Handler, self bool) {
	c.mu.Lock()
	c.handlers = append(c.handlers, handlerEntry{h: h, includeSelf: self})
	c.mu.Unlock()
	// Replay what is known from the dispatcher, so it is ordered with the
	// events that follow.
	c.q.push(rawEvent{kind: evReplay, replay: handlerEntry{h: h, includeSelf: self}})
}

// Start creates the memberlist (binds the gossip port) and starts delivering
// events. It does not join anyone: see Join and Run.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("cluster: start after shutdown")
	}
	if c.ml != nil {
		return nil
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.NodeName
	if c.cfg.BindAddr.IsValid() {
		mc.BindAddr = c.cfg.BindAddr.String()
	} else {
		mc.BindAddr = "0.0.0.0"
		if c.cfg.AdvertiseAddr.Is6() {
			mc.BindAddr = "::"
		}
	}
	mc.BindPort = c.cfg.Port
	mc.AdvertiseAddr = c.cfg.AdvertiseAddr.String()
	mc.AdvertisePort = c.cfg.Port
	if len(c.cfg.GossipKey) > 0 {
		mc.SecretKey = append([]byte(nil), c.cfg.GossipKey...)
	}
	mc.Delegate = &delegate{c: c}
	mc.Events = &eventDelegate{c: c}
	c.ping = &pingDelegate{c: c, joined: map[string]time.Time{}}
	mc.Ping = c.ping
	mc.Logger = newMemberlistLogger(c.cfg.Logger, c.met.rejects)
	if c.cfg.Tune != nil {
		c.cfg.Tune(mc)
	}
	var tr *transport
	if mc.Transport == nil {
		bind, err := netip.ParseAddr(mc.BindAddr)
		if err != nil {
			return fmt.Errorf("cluster: bind address %q: %w", mc.BindAddr, err)
		}
		if tr, err = newTransport(bind, mc.BindPort, c.log); err != nil {
			return fmt.Errorf("cluster: start memberlist: %w", err)
		}
		mc.Transport = tr
		if mc.BindPort == 0 {
			mc.BindPort, mc.AdvertisePort = tr.port(), tr.port()
		}
	}
	c.prior = c.loadState()
	go c.dispatch()
	ml, err := memberlist.Create(mc)
	if err != nil {
		c.stopDispatch()
		if tr != nil {
			tr.Shutdown()
		}
		return fmt.Errorf("cluster: start memberlist on %s:%d: %w", mc.BindAddr, c.cfg.Port, err)
	}
	c.ml = ml
	n := ml.LocalNode()
	c.boundPort.Store(int32(n.Port))
	c.log.Info("gossip started", "name", n.Name, "addr", n.Address(), "role", c.cfg.Role,
		"encrypted", len(c.cfg.GossipKey) > 0)
	return nil
}

func (c *Cluster) memberlist() *memberlist.Memberlist {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ml
}

// Port is the gossip port actually bound (useful when Config.Port is 0).
func (c *Cluster) Port() int {
	// Read once at Start: memberlist's local node is rewritten, without
	// a lock we could take, by UpdateNode (Leave's announcement).
	if p := c.boundPort.Load(); p != 0 {
		return int(p)
	}
	return c.cfg.Port
}

// Join contacts seeds (host:port or host) once and returns how many
// answered. Seeds that are this node are skipped.
func (c *Cluster) Join(seeds []string) (int, error) {
	ml := c.memberlist()
	if ml == nil {
		return 0, errors.New("cluster: join before start")
	}
	var others []string
	for _, s := range seeds {
		if !c.isSelf(s) {
			others = append(others, s)
		}
	}
	if len(others) == 0 {
		return 0, nil
	}
	n, err := ml.Join(others)
	if err != nil {
		return n, fmt.Errorf("cluster: join %v: %w", others, err)
	}
	return n, nil
}

// isSelf reports whether seed names this node's advertised address and port.
func (c *Cluster) isSelf(seed string) bool {
	host, port, err := net.SplitHostPort(seed)
	if err != nil {
		host, port = seed, strconv.Itoa(c.Port())
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return a.Unmap() == c.cfg.AdvertiseAddr && port == strconv.Itoa(c.Port())
}

// Run starts the node if needed, joins the seeds with exponential backoff
// until one answers (a seed may come up later), keeps re-joining them
// whenever this node finds itself alone, and on ctx done leaves the cluster
// and shuts down. It returns nil on a clean shutdown.
func (c *Cluster) Run(ctx context.Context) error {
	if err := c.Start(); err != nil {
		return err
	}
	defer c.Shutdown()
	// The join loops read memberlist's member records, which Leave's
	// announcement rewrites: they end before it.
	var loops sync.WaitGroup
	if len(c.cfg.Seeds) > 0 {
		loops.Go(func() { c.joinLoop(ctx) })
	}
	c.mu.Lock()
	known := c.prior
	c.mu.Unlock()
	if len(known) > 0 {
		loops.Go(func() { c.rejoinKnown(ctx, known) })
	}
	<-ctx.Done()
	loops.Wait()
	if err := c.Leave(c.cfg.LeaveTimeout); err != nil {
		c.log.Warn("leave cluster", "err", err)
	}
	return nil
}

// seedCheckEvery is how often a node that is not alone checks that a seed is
// still among its members. A seed that restarted (the aggregator, say) comes
// back alone: nobody else would ever contact it again.
const seedCheckEvery = 5 * time.Second

func (c *Cluster) joinLoop(ctx context.Context) {
	wait := c.cfg.JoinBackoffMin
	var lastSeedCheck time.Time
	for {
		ml := c.memberlist()
		if ml == nil {
			return
		}
		rejoin := false
		if ml.NumMembers() > 1 && time.Since(lastSeedCheck) >= seedCheckEvery {
			lastSeedCheck = time.Now()
			rejoin = !c.seedPresent(ctx, ml)
			if rejoin {
				c.log.Info("no seed among the members, joining the seeds again", "seeds", c.cfg.Seeds)
			}
		}
		if ml.NumMembers() <= 1 || rejoin {
			c.joinAttempts.Add(1)
			n, err := c.Join(c.cfg.Seeds)
			switch {
			case err != nil:
				c.log.Warn("join seeds failed, retrying", "seeds", c.cfg.Seeds, "retry_in", wait, "err", err)
				wait = min(wait*2, c.cfg.JoinBackoffMax)
			case n > 0 && ml.NumMembers() > 1:
				c.log.Info("joined cluster", "seeds", c.cfg.Seeds, "contacted", n, "members", ml.NumMembers())
				wait = c.cfg.JoinBackoffMin
			default:
				// Only ourselves answered (a seed naming this node by host
				// name), or every seed is this node: nobody else yet.
				c.log.Debug("no other member reached", "seeds", c.cfg.Seeds, "retry_in", wait)
				wait = min(wait*2, c.cfg.JoinBackoffMax)
			}
		} else {
			wait = c.cfg.JoinBackoffMin
		}
		// Jitter in [wait/2, wait] so that nodes started together do not
		// retry in lockstep.
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-ctx.Done():
			return
		case <-c.stop:
			return
		case <-time.After(max(d, c.cfg.JoinBackoffMin/2)):
		}
	}
}

// seedPresent reports whether any seed's address is an alive member (this
// node counts: a node that is its own seed has nothing to re-join).
func (c *Cluster) seedPresent(ctx context.Context, ml *memberlist.Memberlist) bool {
	// The few seed addresses first, then one pass over the members without
	// copying them: this runs every 5 s on every node, over N members.
	var seeds []netip.AddrPort
	for _, seed := range c.cfg.Seeds {
		host, portStr, err := net.SplitHostPort(seed)
		if err != nil {
			host, portStr = seed, strconv.Itoa(c.cfg.Port)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			continue
		}
		addrs := []netip.Addr{}
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = append(addrs, a)
		} else {
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			addrs, _ = net.DefaultResolver.LookupNetIP(lctx, "ip", host)
			cancel()
		}
		for _, a := range addrs {
			seeds = append(seeds, netip.AddrPortFrom(a.Unmap(), uint16(port)))
		}
	}
	for _, n := range ml.Members() {
		if n.State != memberlist.StateAlive && n.State != memberlist.StateSuspect {
			continue
		}
		if a, ok := netip.AddrFromSlice(n.Addr); ok && slices.Contains(seeds, netip.AddrPortFrom(a.Unmap(), n.Port)) {
			return true
		}
	}
	return false
}

// Leave broadcasts our departure and waits up to timeout for it to spread.
func (c *Cluster) Leave(timeout time.Duration) error {
	// memberlist panics on a leave after shutdown: serialise the two.
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	c.mu.Lock()
	ml, closed := c.ml, c.closed
	c.mu.Unlock()
	if ml == nil || closed {
		return nil
	}
	// Tell peers first that this is a leave, not a failure, so they forget
	// us at once instead of probing us through their failed-peer grace.
	leaving := c.local
	leaving.Leaving = true
	if enc, err := leaving.Encode(); err == nil {
		c.encoded.Store(&enc)
		if err := ml.UpdateNode(timeout / 2); err != nil {
			c.log.Debug("leaving announcement not confirmed", "err", err)
		}
	}
	if err := ml.Leave(timeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip without a leave (peers will detect us as failed)
// and stops event delivery. Safe to call more than once.
func (c *Cluster) Shutdown() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	c.mu.Lock()
	ml := c.ml
	c.closed = true
	c.mu.Unlock()
	var err error
	if ml != nil {
		if e := ml.Shutdown(); e != nil {
			err = fmt.Errorf("cluster: shutdown: %w", e)
		}
	}
	c.stopDispatch()
	return err
}

func (c *Cluster) stopDispatch() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.q.wake()
}

// Members returns every alive, compatible member, this node included, as
// the handlers were told, sorted by name. (memberlist's own Members hands
// out nodes it keeps writing: reading their meta while a member's changes
// is a race.) It copies the member set when asked: the dispatcher keeps no
// sorted copy, which would cost O(N) per membership event.
func (c *Cluster) Members() []Peer {
	c.knownMu.RLock()
	ps := make([]Peer, 0, len(c.known))
	for _, p := range c.known {
		ps = append(ps, p)
	}
	c.knownMu.RUnlock()
	slices.SortFunc(ps, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return ps
}

// setKnown and forgetKnown are the dispatcher's writes of known.
func (c *Cluster) setKnown(p Peer) {
	c.knownMu.Lock()
	c.known[p.Name] = p
	c.knownMu.Unlock()
}

func (c *Cluster) forgetKnown(name string) {
	c.knownMu.Lock()
	delete(c.known, name)
	c.knownMu.Unlock()
}

// peerOf decodes a member's meta and checks it against ours.
func (c *Cluster) peerOf(name string, ip net.IP, port uint16, meta []byte) (Peer, string, string) {
	addr, _ := netip.AddrFromSlice(ip)
	p := Peer{Name: name, Addr: addr.Unmap(), GossipPort: port}
	m, err := DecodeMeta(meta)
	if err != nil {
		return p, metaReason(err), err.Error()
	}
	p.Role, p.HTTPPort, p.PingPort, p.Version, p.Instance, p.Leaving = m.Role, m.HTTPPort, m.PingPort, m.Version, m.Instance, m.Leaving
	if p.HTTPAddr = m.HTTPAddr; !p.HTTPAddr.IsValid() {
		p.HTTPAddr = p.Addr
	}
	if !p.Addr.IsValid() {
		return p, "address", fmt.Sprintf("invalid address %v", ip)
	}
	if name == c.cfg.NodeName {
		return p, "", ""
	}
	reason, detail := compatible(c.local, m)
	return p, reason, detail
}

// --- event delivery -------------------------------------------------------

type evKind uint8

const (
	evJoin evKind = iota
	evLeave
	evUpdate
	evReplay
	evExpire // a failed member's grace ended
)

type rawEvent struct {
	kind   evKind
	name   string
	addr   net.IP
	port   uint16
	meta   []byte
	replay handlerEntry
	gen    uint64 // evExpire: the failure it ends
}

// queue is an unbounded FIFO: memberlist must never block on us.
type queue struct {
	mu    sync.Mutex
	items []rawEvent
	sig   chan struct{}
}

func (q *queue) init() { q.sig = make(chan struct{}, 1) }

func (q *queue) push(e rawEvent) {
	q.mu.Lock()
	q.items = append(q.items, e)
	q.mu.Unlock()
	q.wake()
}

func (q *queue) wake() {
	select {
	case q.sig <- struct{}{}:
	default:
	}
}

func (q *queue) drain() []rawEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

func (c *Cluster) dispatch() {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		case <-c.q.sig:
		}
		// The member gauges and the state file follow once per drained
		// batch, not per event: each reads every member, and a join
		// storm queues thousands of events (O(N²) per node at N
		// members).
		changed := false
		for _, e := range c.q.drain() {
			select {
			case <-c.stop:
				return
			default:
			}
			changed = c.handle(e) || changed
		}
		if changed {
			c.updateGauge()
		}
		if c.stateDirty {
			c.stateDirty = false
			c.saveState()
		}
	}
}

// handle applies one event; it reports whether the member set may have
// changed (every event but a replay).
func (c *Cluster) handle(e rawEvent) bool {
	if e.kind == evReplay {
		for _, p := range c.known {
			if p.Name == c.cfg.NodeName && !e.replay.includeSelf {
				continue
			}
			e.replay.h.PeerJoin(p)
		}
		return false
	}
	c.handleChange(e)
	return true
}

func (c *Cluster) handleChange(e rawEvent) {
	switch e.kind {
	case evJoin:
		c.met.events.WithLabelValues("join").Inc()
	case evLeave:
		c.met.events.WithLabelValues("leave").Inc()
	case evUpdate:
		c.met.events.WithLabelValues("update").Inc()
	}
	old, wasKnown := c.known[e.name]
	if e.kind == evExpire {
		if f, ok := c.failed[e.name]; ok && f.gen == e.gen && wasKnown {
			c.checkFailed(old, f)
		}
		return
	}
	if e.kind == evLeave {
		delete(c.ignored, e.name)
		if wasKnown && c.fail(old) {
			return
		}
		if wasKnown {
			c.forgetKnown(e.name)
			delete(c.failed, e.name)
			c.log.Info("peer left", "name", old.Name, "addr", old.Addr, "role", old.Role)
			c.deliver(old, false)
		}
		return
	}
	if _, ok := c.failed[e.name]; ok {
		delete(c.failed, e.name)
		old.Failed = false
		c.setKnown(old)
		c.log.Info("failed peer is back", "name", old.Name, "addr", old.Addr)
	}
	p, reason, detail := c.peerOf(e.name, e.addr, e.port, e.meta)
	if reason != "" {
		if c.ignored[e.name] != reason {
			c.ignored[e.name] = reason
			c.met.incompatible.WithLabelValues(reason).Inc()
			c.log.Warn("ignoring incompatible member: it will not be probed", "name", e.name,
				"addr", p.Addr, "reason", reason, "detail", detail)
		}
		if wasKnown {
			c.forgetKnown(e.name)
			c.deliver(old, false)
		}
		return
	}
	delete(c.ignored, e.name)
	if wasKnown {
		if old.Addr == p.Addr && old.Role == p.Role && old.HTTPPort == p.HTTPPort && old.HTTPAddr == p.HTTPAddr && old.PingPort == p.PingPort {
			c.setKnown(p) // e.g. a version-only change: nothing to redo
			if old.Instance != 0 && p.Instance != old.Instance {
				c.log.Info("peer restarted", "name", p.Name, "addr", p.Addr, "role", p.Role)
				c.restarted(p)
				// Its refutation may reach us before any probe of ours
				// sees its new instance in an ack: join it here too, or
				// a restarted seed could stay knowing only the members
				// whose gossip happened to reach it.
				if c.ping != nil {
					c.ping.rejoin(p.Name, net.JoinHostPort(p.Addr.String(), strconv.Itoa(int(e.port))))
				}
			}
			return
		}
		c.deliver(old, false)
	}
	c.setKnown(p)
	if !wasKnown {
		c.log.Info("peer joined", "name", p.Name, "addr", p.Addr, "role", p.Role, "version", p.Version)
	}
	c.deliver(p, true)
}

// failure is a member in its failed-peer grace.
type failure struct {
	gen   uint64    // tells this failure's checks from an earlier one's
	until time.Time // end of the grace
}

// failCheckEvery is how often a failed member's Reachable is asked again.
const failCheckEvery = 2 * time.Second

// fail starts the grace of a member gossip declared dead, unless it
// announced its leave, there is no grace, or Config.Reachable says no
// probe reaches it (a crashed or isolated host): it stays known (and
// probed) until it comes back, stops answering or the grace ends. It
// reports whether the member is now in its grace.
func (c *Cluster) fail(p Peer) bool {
	if c.cfg.FailedGrace <= 0 || p.Leaving || p.Name == c.cfg.NodeName {
		return false
	}
	if _, ok := c.failed[p.Name]; ok {
		return true
	}
	if c.cfg.Reachable != nil && !c.cfg.Reachable(p) {
		c.log.Info("peer failed and answers on no path", "name", p.Name, "addr", p.Addr)
		return false
	}
	c.failGen++
	f := failure{gen: c.failGen, until: time.Now().Add(c.cfg.FailedGrace)}
	c.failed[p.Name] = f
	p.Failed = true
	c.setKnown(p)
	c.met.events.WithLabelValues("fail").Inc()
	c.log.Warn("peer failed in gossip but still answers probes: still probed until it is back, stops answering or the grace ends",
		"name", p.Name, "addr", p.Addr, "grace", c.cfg.FailedGrace)
	c.scheduleCheck(p.Name, f)
	return true
}

// scheduleCheck queues the next look at a failed member.
func (c *Cluster) scheduleCheck(name string, f failure) {
	wait := time.Until(f.until)
	if c.cfg.Reachable != nil {
		wait = min(wait, failCheckEvery)
	}
	time.AfterFunc(max(wait, 0), func() { c.q.push(rawEvent{kind: evExpire, name: name, gen: f.gen}) })
}

// checkFailed forgets a failed member whose grace ended or that no probe
// reaches any more, and otherwise looks again later.
func (c *Cluster) checkFailed(p Peer, f failure) {
	why := ""
	switch {
	case !time.Now().Before(f.until):
		why = "its grace ended"
	case c.cfg.Reachable != nil && !c.cfg.Reachable(p):
		why = "it answers on no path"
	default:
		c.scheduleCheck(p.Name, f)
		return
	}
	delete(c.failed, p.Name)
	c.forgetKnown(p.Name)
	c.log.Info("failed peer forgotten", "name", p.Name, "addr", p.Addr, "why", why)
	c.deliver(p, false)
}

func (c *Cluster) deliver(p Peer, join bool) {
	c.stateDirty = true
	self := p.Name == c.cfg.NodeName
	c.mu.Lock()
	hs := append([]handlerEntry(nil), c.handlers...)
	c.mu.Unlock()
	for _, h := range hs {
		if self && !h.includeSelf {
			continue
		}
		if join {
			h.h.PeerJoin(p)
		} else {
			h.h.PeerLeave(p)
		}
	}
}

// restarted tells the handlers that implement Restarter that p restarted.
func (c *Cluster) restarted(p Peer) {
	c.met.events.WithLabelValues("restart").Inc()
	self := p.Name == c.cfg.NodeName
	c.mu.Lock()
	hs := append([]handlerEntry(nil), c.handlers...)
	c.mu.Unlock()
	for _, h := range hs {
		if r, ok := h.h.(Restarter); ok && (!self || h.includeSelf) {
			r.PeerRestart(p)
		}
	}
}

func (c *Cluster) updateGauge() {
	counts := map[string]int{RoleAgent: 0, RoleAggregator: 0}
	for _, p := range c.known {
		if !p.Failed {
			counts[p.Role]++
		}
	}
	for r, n := range counts {
		c.met.members.WithLabelValues(r).Set(float64(n))
	}
}

// --- memberlist delegates ---------------------------------------------------

// delegate advertises our meta; we gossip no user data.
type delegate struct{ c *Cluster }

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	enc := *d.c.encoded.Load()
	if len(enc) > limit {
		d.c.log.Error("node meta larger than memberlist allows; advertising none", "size", len(enc), "limit", limit)
		return nil
	}
	return enc
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// eventDelegate copies memberlist's callbacks into the queue: they run with
// memberlist's locks held and must not block.
type eventDelegate struct{ c *Cluster }

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (d *eventDelegate) NotifyJoin(n *memberlist.Node)   { d.push(evJoin, n) }
func (d *eventDelegate) NotifyLeave(n *memberlist.Node)  { d.push(evLeave, n) }
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { d.push(evUpdate, n) }

func (d *eventDelegate) push(k evKind, n *memberlist.Node) {
	d.c.q.push(rawEvent{
		kind: k,
		name: n.Name,
		addr: append(net.IP(nil), n.Addr...),
		port: n.Port,
		meta: append([]byte(nil), n.Meta...),
	})
}
