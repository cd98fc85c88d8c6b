package graph

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Graph.
type Config struct {
	// RingSize is how many samples a route's metrics cover
	// (-metricRingSize): its newest samples over all its keys, N to
	// N+⌈N/8⌉−1 of them (at most N+15), in whole epochs (see flow.go).
	RingSize int
	// CoalesceInterval bounds route-update events to one per route per
	// interval. Updates owed inside the interval go out on the next AddSample
	// after it, or on Flush (Run calls Flush every interval).
	CoalesceInterval time.Duration
	// EventBuffer is the size of the replay ring behind Subscribe.
	EventBuffer int
	// SubscriberBuffer is the channel size Subscribe uses when buf <= 0.
	SubscriberBuffer int
	// Now is the clock; nil means time.Now. Tests inject a fake.
	Now func() time.Time
	// Health tunes the localization (see HealthConfig).
	Health HealthConfig
	// BaselineWindow is how far back a route's RTT baseline looks (the
	// lowest 10th percentile of its window samples). Default 10 minutes.
	BaselineWindow time.Duration
}

// DefaultConfig returns the defaults: 100 samples per route, one route update
// per second per route, 4096 events of replay.
func DefaultConfig() Config {
	return Config{
		RingSize:         100,
		CoalesceInterval: time.Second,
		EventBuffer:      4096,
		SubscriberBuffer: 256,
		Health:           DefaultHealthConfig(),
		BaselineWindow:   10 * time.Minute,
	}
}

// Graph holds nodes, links, routes and their metrics. All methods are safe
// for concurrent use; readers run concurrently with each other.
type Graph struct {
	cfg Config

	mu       sync.RWMutex
	nodes    map[string]*nodeEntry
	links    map[LinkID]*linkEntry
	routes   map[string]*routeEntry   // by routeEntry.ikey
	keys     map[RouteKey]*routeEntry // local (agent) keys
	imported map[string]*originIndex  // origin -> its routes by key pair
	pending  map[*routeEntry]struct{} // owe a route-update event
	events   eventLog
	subs     map[*Subscription]struct{}
	// baselines outlive their routes: by routeEntry.ikey (origin + hop
	// list), so a path that comes back keeps its RTT baseline.
	baselines map[baselineKey]*baseline
	// paths are the routes' router-level paths, shared (paths.go);
	// nodeNames are the nodes by number, freeNums the numbers to reuse.
	paths     map[string]*fabricPath
	nodeNames []string
	freeNums  []int32
	pathBuf   []byte // refPathLocked's scratch
	hops      int    // the routes' hops, endpoints included
	// slots are the imported routes' estimator inputs (healthstore.go).
	slots slotTable

	health healthCache
	// staleOrigins are the origins whose imported routes health leaves
	// out (SetOriginStale); staleGen counts changes to it, so the health
	// cache knows its rows are old.
	staleOrigins map[string]bool
	staleGen     uint64
	// gen counts changes to the graph's data, with or without an event
	// (a sample or imported metrics that coalescing holds back), under mu.
	gen   uint64
	snaps snapCache
	t0    time.Time // creation: routes' update times count from it
}

type nodeEntry struct {
	node      Node
	refs      int // routes through this node (counted once per route position)
	endpoints int // of which as a route endpoint
	num       int32
}

type linkEntry struct {
	refs int
}

// routeEntry is one route. The aggregator holds ~1.7 N² imported ones,
// so the fields only local routes need are behind localState, and the
// bools share one word.
type routeEntry struct {
	ikey string       // routeIKey: its tail after the last NUL is the route id (routeID)
	idx  *originIndex // an imported route's origin (originName); nil for local routes
	// rare holds what few imported routes need (paths.go): src and dst
	// when they are not the endpoint nodes' addresses, keys when they are
	// not all flows of src→dst. nil for most routes.
	rare *routeRare
	// The hops are from, path.via, to (paths.go): node IDs, the nodes'
	// own strings.
	from, to *nodeEntry
	path     *fabricPath
	hopRTT   []float64 // latest trace's per-hop RTT (seconds), aligned with the hops; nil if none

	*localState // local routes only; nil for imported routes
	// rep is an imported route's flow state as its origin's delta batches
	// describe it (delta.go); nil until the first.
	rep *replica

	updated int64 // when the last route-update went out: see setUpdated

	mmu      sync.Mutex // guards the lazily computed fields (metrics, dirty, a local route's keyList) for readers
	local    bool
	dirty    bool
	keyStale bool
	slot     int32 // an imported route's health slot (healthstore.go)
	metrics  Metrics
	// An imported route's key set is ports when every key is a flow of
	// src→dst, else rare.keys (compact.go): replaced, never modified.
	ports []uint16
}

// localState is what only a local route has: its keys' flow state and
// RTT baselines, and the route's side of the window (flow.go).
type localState struct {
	keys  map[RouteKey]*flowState
	bases map[RouteKey]*baseline
	now   func() time.Time
	win   flowWindow

	// keyList is the sorted keys, derived from keys when stale; replaced,
	// never modified.
	keyList []RouteKey
	// baseVals are the keys' RTT baselines (in keyList order) as of the
	// metrics: what a delta stream ships. Replaced, never modified.
	baseVals []float64
}

// neverUpdated is routeEntry.updated before the first route-update.
const neverUpdated = math.MinInt64

// setUpdated records that r's route-update went out at now, as the time
// since the graph's creation: a monotonic clock reading's meaning in 8
// bytes instead of a time.Time's 24.
func (g *Graph) setUpdated(r *routeEntry, now time.Time) { r.updated = int64(now.Sub(g.t0)) }

// sinceUpdate is how long before now r's last route-update went out.
func (g *Graph) sinceUpdate(r *routeEntry, now time.Time) time.Duration {
	if r.updated == neverUpdated {
		return math.MaxInt64
	}
	return now.Sub(g.t0) - time.Duration(r.updated)
}

// setKey and delKey change the key set (under the graph's write lock).
// setKey is for local routes; imported routes set theirs with
// originIndex.setKeys.
func (r *routeEntry) setKey(k RouteKey, f *flowState) {
	r.keys[k] = f
	r.keyStale = true
}

func (r *routeEntry) delKey(k RouteKey) {
	if !r.local {
		r.delImportedKey(k)
		return
	}
	delete(r.keys, k)
	r.keyStale = true
}

// numKeys is how many keys map to r.
func (r *routeEntry) numKeys() int {
	if r.local {
		return len(r.keys)
	}
	return len(r.ports) + len(r.importedKeyList())
}

// keysOf returns the sorted key list. The slice is shared: callers must not
// modify it. Safe under the read lock.
func (r *routeEntry) keysOf() []RouteKey {
	r.mmu.Lock()
	defer r.mmu.Unlock()
	return r.sortedKeysLocked()
}

// sortedKeysLocked is keysOf under r.mmu.
func (r *routeEntry) sortedKeysLocked() []RouteKey {
	if !r.local {
		return r.importedKeys()
	}
	if r.keyStale || r.keyList == nil {
		ks := make([]RouteKey, 0, len(r.keys))
		for k := range r.keys {
			ks = append(ks, k)
		}
		slices.SortFunc(ks, compareKeys)
		r.keyList = ks
		r.keyStale = false
	}
	return r.keyList
}

// New returns an empty graph. Zero fields of cfg take their defaults.
func New(cfg Config) *Graph {
	def := DefaultConfig()
	if cfg.RingSize <= 0 {
		cfg.RingSize = def.RingSize
	}
	if cfg.CoalesceInterval <= 0 {
		cfg.CoalesceInterval = def.CoalesceInterval
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = def.EventBuffer
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = def.SubscriberBuffer
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BaselineWindow <= 0 {
		cfg.BaselineWindow = def.BaselineWindow
	}
	cfg.Health = cfg.Health.WithDefaults()
	return &Graph{
		cfg:      cfg,
		t0:       cfg.Now(),
		nodes:    make(map[string]*nodeEntry),
		links:    make(map[LinkID]*linkEntry),
		routes:   make(map[string]*routeEntry),
		keys:     make(map[RouteKey]*routeEntry),
		imported: make(map[string]*originIndex),
		pending:  make(map[*routeEntry]struct{}),
		events:   newEventLog(cfg.EventBuffer),
		subs:     make(map[*Subscription]struct{}),

		baselines: make(map[baselineKey]*baseline),
		paths:     make(map[string]*fabricPath),
	}
}

// RouteID is the stable route identifier of a hop list: the first 16 hex
// digits of sha256 over the hop strings joined by "|". Silent hops are written
// "*" (not their placeholder IDs, which themselves contain the route ID), so
// the ID depends only on what was traced.
func RouteID(hops []string) string {
	h := sha256.New()
	for i, s := range hops {
		if i > 0 {
			h.Write([]byte{'|'})
		}
		if strings.HasPrefix(s, "*") {
			s = "*"
		}
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// SilentID is the placeholder node ID of a silent hop at position pos of
// route routeID.
func SilentID(routeID string, pos int) string {
	return "*" + routeID + "/" + strconv.Itoa(pos)
}

func isSilent(id string) bool { return strings.HasPrefix(id, "*") }

// normalizeHops turns traced hops into hop strings ("*" for silent) with the
// key's endpoints at both ends: SetRoute accepts hop lists with or without
// them.
func normalizeHops(key RouteKey, hops []Hop) []string {
	out := make([]string, 0, len(hops)+2)
	if len(hops) == 0 || hops[0].Addr.Unmap() != key.Src {
		out = append(out, key.Src.String())
	}
	for _, h := range hops {
		if h.Addr.IsValid() {
			out = append(out, h.Addr.Unmap().String())
		} else {
			out = append(out, "*")
		}
	}
	if len(hops) == 0 || hops[len(hops)-1].Addr.Unmap() != key.Dst {
		out = append(out, key.Dst.String())
	}
	return out
}

// hopRTTs are a trace's per-hop RTTs in seconds, aligned with what
// normalizeHops makes of the same hops; nil when no hop was timed.
func hopRTTs(key RouteKey, hops []Hop) []float64 {
	out := make([]float64, 0, len(hops)+2)
	timed := false
	if len(hops) == 0 || hops[0].Addr.Unmap() != key.Src {
		out = append(out, 0)
	}
	for _, h := range hops {
		s := max(h.RTT.Seconds(), 0)
		timed = timed || s > 0
		out = append(out, s)
	}
	if len(hops) == 0 || hops[len(hops)-1].Addr.Unmap() != key.Dst {
		out = append(out, 0)
	}
	if !timed {
		return nil
	}
	return out
}

// nodeIDs turns hop strings into node IDs, giving silent hops their
// placeholder IDs under route id.
func nodeIDs(id string, hops []string) []string {
	out := make([]string, len(hops))
	for i, h := range hops {
		if h == "*" {
			out[i] = SilentID(id, i)
		} else {
			out[i] = h
		}
	}
	return out
}

// SetRoute records that key's flow follows hops (from the mapper). hops may
// include the endpoints or not; a silent hop has a zero Addr. It returns the
// route ID the key now maps to and a PathChange when the key moved from a
// different path.
//
// A re-trace that differs from the current path only by silent hops (new "*"
// where an address was known) is not a change: the key keeps its route. A
// re-trace that only fills in addresses where the current route had silent
// hops is not a change either: the key moves to the refined route with its
// flow state. A real path change moves the key to the new route with a fresh
// flow state (old samples describe the old path).
func (g *Graph) SetRoute(key RouteKey, hops []Hop) (string, *PathChange) {
	if !key.Src.IsValid() || !key.Dst.IsValid() {
		return "", nil
	}
	key.Src, key.Dst = key.Src.Unmap(), key.Dst.Unmap()
	newHops := normalizeHops(key, hops)
	rtts := hopRTTs(key, hops)

	g.lockChange()
	defer g.mu.Unlock()
	// The route the key ends on keeps this trace's hop RTTs (a trace that
	// timed nothing leaves the previous ones).
	defer func() {
		if r := g.keys[key]; r != nil && len(rtts) == r.nHops() {
			r.hopRTT = rtts
		}
	}()

	old := g.keys[key]
	if old == nil {
		id := RouteID(newHops)
		r := g.attachLocked(key, id, "", true, key.Src, key.Dst, nodeIDs(id, newHops), newFlowState())
		return r.routeID(), nil
	}
	merged, compatible := mergeHops(g.hopListLocked(old), newHops)
	if compatible {
		id := RouteID(merged)
		if id == old.routeID() {
			return old.routeID(), nil
		}
		// Attach before detaching so shared nodes and links are not
		// removed and re-added.
		r := g.attachLocked(key, id, "", true, key.Src, key.Dst, nodeIDs(id, merged), old.keys[key])
		g.detachLocked(old, key)
		return r.routeID(), nil
	}
	id := RouteID(newHops)
	oldID, oldHops := old.routeID(), g.hopListLocked(old)
	r := g.attachLocked(key, id, "", true, key.Src, key.Dst, nodeIDs(id, newHops), newFlowState())
	pc := &PathChange{
		Key:      key,
		OldRoute: oldID,
		NewRoute: r.routeID(),
		OldHops:  oldHops,
		NewHops:  g.hopListLocked(r),
		HopDelta: r.nHops() - len(oldHops),
	}
	g.emitLocked(Event{Type: EventPathChange, Change: clonePathChange(pc)})
	g.detachLocked(old, key)
	return r.routeID(), pc
}

// mergeHops compares the current route's node IDs with a new trace's hop
// strings. They are compatible when they have the same length and differ only
// where one side is silent; merged then takes every known address from
// either side.
func mergeHops(old []string, nw []string) (merged []string, compatible bool) {
	if len(old) != len(nw) {
		return nil, false
	}
	merged = make([]string, len(nw))
	for i := range nw {
		os, ns := isSilent(old[i]), nw[i] == "*"
		switch {
		case os && ns:
			merged[i] = "*"
		case os:
			merged[i] = nw[i]
		case ns:
			merged[i] = old[i]
		case old[i] == nw[i]:
			merged[i] = nw[i]
		default:
			return nil, false
		}
	}
	return merged, true
}

// RemoveRoute forgets key's route mapping (and the route when no other key
// uses it).
func (g *Graph) RemoveRoute(key RouteKey) {
	key.Src, key.Dst = key.Src.Unmap(), key.Dst.Unmap()
	g.lockChange()
	defer g.mu.Unlock()
	if r := g.keys[key]; r != nil {
		g.detachLocked(r, key)
	}
}

// RemoveHost forgets every local route key from or to addr (a peer left).
// Imported routes are managed per origin (RemoveOrigin).
func (g *Graph) RemoveHost(addr netip.Addr) {
	addr = addr.Unmap()
	g.lockChange()
	defer g.mu.Unlock()
	var ks []RouteKey
	for k := range g.keys {
		if k.Src == addr || k.Dst == addr {
			ks = append(ks, k)
		}
	}
	slices.SortFunc(ks, compareKeys)
	for _, k := range ks {
		if r := g.keys[k]; r != nil {
			g.detachLocked(r, k)
		}
	}
}

// AddSample adds one ping result to key's flow state. It is a no-op when
// the key has no route or the sample was sent before the key's ResetPeer
// floor. A route-update event goes out at most once per CoalesceInterval
// per route.
func (g *Graph) AddSample(key RouteKey, s Sample) {
	key.Src, key.Dst = key.Src.Unmap(), key.Dst.Unmap()
	g.lockChange()
	defer g.mu.Unlock()
	r := g.keys[key]
	if r == nil {
		return
	}
	f := r.keys[key]
	if f == nil || !r.win.add(f, s) {
		return
	}
	r.mmu.Lock()
	r.dirty = true
	r.mmu.Unlock()
	g.maybeUpdateLocked(r)
}

// RouteKeys lists the local keys that have a route, sorted.
func (g *Graph) RouteKeys() []RouteKey {
	g.mu.RLock()
	ks := make([]RouteKey, 0, len(g.keys))
	for k := range g.keys {
		ks = append(ks, k)
	}
	g.mu.RUnlock()
	slices.SortFunc(ks, compareKeys)
	return ks
}

// RouteOf returns the route ID key maps to, if any.
func (g *Graph) RouteOf(key RouteKey) (string, bool) {
	key.Src, key.Dst = key.Src.Unmap(), key.Dst.Unmap()
	g.mu.RLock()
	defer g.mu.RUnlock()
	if r := g.keys[key]; r != nil {
		return r.routeID(), true
	}
	return "", false
}

// ImportRoute upserts a route whose metrics were computed elsewhere (the
// aggregator importing an agent's route). r.Hops are node IDs as the agent
// reported them; r.Keys are the keys that map to it, which replace the keys
// the route had from this origin. A key that moves from another of this
// origin's routes with different hops yields a path-change event. r.ID is
// kept when set, else computed from the hops. Routes with fewer than two hops,
// or whose id has a NUL byte, are ignored.
func (g *Graph) ImportRoute(origin string, r Route) {
	if len(r.Hops) < 2 || strings.IndexByte(r.ID, 0) >= 0 {
		return
	}
	id := r.ID
	if id == "" {
		id = RouteID(r.Hops)
	}
	src, dst := r.Src, r.Dst
	if !src.IsValid() {
		src, _ = netip.ParseAddr(r.Hops[0])
	}
	if !dst.IsValid() {
		dst, _ = netip.ParseAddr(r.Hops[len(r.Hops)-1])
	}
	g.lockChange()
	defer g.mu.Unlock()
	idx := g.imported[origin]
	if idx == nil {
		idx = newOriginIndex(origin)
		g.imported[origin] = idx
	}
	ikey := routeIKey(idx.name, false, id)
	want := sortedKeySet(r.Keys)
	// Keys that left this route.
	if cur := g.routes[ikey]; cur != nil {
		for _, k := range cur.importedKeys() {
			if _, ok := slices.BinarySearchFunc(want, k, compareKeys); !ok {
				idx.delKey(cur, k)
			}
		}
	}
	var moved []*PathChange
	var from []*routeEntry
	for _, k := range r.Keys {
		prev := idx.find(k)
		if prev == nil || prev.ikey == ikey {
			continue
		}
		if !g.sameHopsLocked(prev, r.Hops) {
			moved = append(moved, &PathChange{
				Key: k, OldRoute: prev.routeID(), NewRoute: id,
				OldHops: g.hopListLocked(prev), NewHops: slices.Clone(r.Hops),
				HopDelta: len(r.Hops) - prev.nHops(),
			})
		}
		from = append(from, prev)
		idx.delKey(prev, k)
	}
	cur := g.routes[ikey]
	defer func() {
		if len(r.HopRTTs) == cur.nHops() {
			cur.hopRTT = slices.Clone(r.HopRTTs)
		}
	}()
	if cur == nil {
		cur = g.createLocked(ikey, idx.name, false, src, dst, r.Hops)
		cur.metrics = r.Metrics
		idx.setKeys(cur, want)
		g.syncSlotLocked(cur)
		g.emitLocked(Event{Type: EventRouteAdd, Route: g.routeCopyLocked(cur)})
		g.setUpdated(cur, g.cfg.Now())
	} else {
		idx.setKeys(cur, want)
		cur.mmu.Lock()
		cur.metrics = r.Metrics
		cur.mmu.Unlock()
		g.syncSlotLocked(cur)
		g.maybeUpdateLocked(cur)
	}
	for _, pc := range moved {
		g.emitLocked(Event{Type: EventPathChange, Change: pc})
	}
	for _, p := range from {
		if g.routes[p.ikey] == p {
			g.afterKeyLossLocked(p)
		}
	}
}

// RemoveImportedRoute drops key from origin's routes (and the route when no
// key is left).
func (g *Graph) RemoveImportedRoute(origin string, key RouteKey) {
	g.lockChange()
	defer g.mu.Unlock()
	idx := g.imported[origin]
	if idx == nil {
		return
	}
	r := idx.find(key)
	if r == nil {
		return
	}
	idx.delKey(r, key)
	g.afterKeyLossLocked(r)
}

// RemoveOrigin drops every route imported from origin (an agent left).
func (g *Graph) RemoveOrigin(origin string) {
	g.lockChange()
	defer g.mu.Unlock()
	var rs []*routeEntry
	for _, r := range g.routes {
		if !r.local && r.originName() == origin {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *routeEntry) int { return cmp.Compare(a.ikey, b.ikey) })
	for _, r := range rs {
		g.removeRouteLocked(r)
	}
	delete(g.imported, origin)
	if g.staleOrigins[origin] {
		delete(g.staleOrigins, origin)
		g.staleGen++
	}
}

// attachLocked adds key to route id (creating it), with f as its samples
// (renumbered into the route's epochs when it brings some).
func (g *Graph) attachLocked(key RouteKey, id, origin string, local bool, src, dst netip.Addr, hops []string, f *flowState) *routeEntry {
	ikey := routeIKey(origin, local, id)
	r := g.routes[ikey]
	if r == nil {
		r = g.createLocked(ikey, origin, local, src, dst, hops)
		g.keyBaselineLocked(r, key, f)
		r.win.adopt(f)
		r.setKey(key, f)
		r.dirty = true
		g.keys[key] = r
		g.emitLocked(Event{Type: EventRouteAdd, Route: g.routeCopyLocked(r)})
		g.setUpdated(r, g.cfg.Now())
		return r
	}
	g.keyBaselineLocked(r, key, f)
	r.win.adopt(f)
	r.setKey(key, f)
	g.keys[key] = r
	r.mmu.Lock()
	r.dirty = true
	r.mmu.Unlock()
	// The key set changed: tell subscribers now, not coalesced.
	g.updateNowLocked(r)
	return r
}

// detachLocked removes a local key from its route.
func (g *Graph) detachLocked(r *routeEntry, key RouteKey) {
	r.delKey(key)
	if g.keys[key] == r {
		delete(g.keys, key)
	}
	r.mmu.Lock()
	r.dirty = true
	r.mmu.Unlock()
	g.afterKeyLossLocked(r)
}

// afterKeyLossLocked removes r when it has no key left, else announces it.
func (g *Graph) afterKeyLossLocked(r *routeEntry) {
	if r.numKeys() == 0 {
		g.removeRouteLocked(r)
		return
	}
	g.syncSlotLocked(r)
	g.updateNowLocked(r)
}

// createLocked makes a route and takes references on its nodes, links
// and router-level path, emitting node-add and link-add for new ones. It
// keeps no reference to hops (at least two).
func (g *Graph) createLocked(ikey, origin string, local bool, src, dst netip.Addr, hops []string) *routeEntry {
	r := &routeEntry{ikey: ikey, local: local, updated: neverUpdated}
	if !local {
		r.idx = g.imported[origin]
	}
	if local {
		r.localState = &localState{keys: make(map[RouteKey]*flowState), now: g.cfg.Now, win: newFlowWindow(g.cfg.RingSize)}
	}
	g.routes[ikey] = r
	last := len(hops) - 1
	for i, h := range hops {
		endpoint := i == 0 || i == last
		n := g.nodes[h]
		if n == nil {
			n = &nodeEntry{node: makeNode(h, endpoint)}
			g.nodes[h] = n
			g.numberNodeLocked(n)
			n.refs++
			if endpoint {
				n.endpoints++
			}
			nc := n.node
			g.emitLocked(Event{Type: EventNodeAdd, Node: &nc})
		} else {
			n.refs++
			if endpoint {
				n.endpoints++
				if n.node.Kind == NodeRouter {
					n.node.Kind = NodeHost
				}
			}
		}
	}
	r.from, r.to = g.nodes[hops[0]], g.nodes[hops[last]]
	if src != r.from.node.Addr || dst != r.to.node.Addr {
		r.rare = &routeRare{ends: true, src: src, dst: dst}
	}
	r.path = g.refPathLocked(hops[1:last])
	g.hops += len(hops)
	r.slot = -1
	if !local {
		g.addSlotLocked(r)
	}
	for i := 1; i <= last; i++ {
		lid := LinkID{Src: g.hopAtLocked(r, i-1), Dst: g.hopAtLocked(r, i)} // the nodes' strings
		l := g.links[lid]
		if l == nil {
			l = &linkEntry{}
			g.links[lid] = l
			l.refs++
			g.emitLocked(Event{Type: EventLinkAdd, Link: &Link{LinkID: lid, Routes: 1}})
		} else {
			l.refs++
		}
	}
	return r
}

// routeIKey is a route's internal map key: local routes and every origin's
// imported routes live in separate namespaces. The id is its tail after
// the last NUL (ImportRoute ignores ids with a NUL).
func routeIKey(origin string, local bool, id string) string {
	if local {
		return "l\x00" + id
	}
	return "i\x00" + origin + "\x00" + id
}

// routeID is r's route id: the tail of its internal key.
func (r *routeEntry) routeID() string { return r.ikey[strings.LastIndexByte(r.ikey, 0)+1:] }

// originName is the origin of an imported route, "" for a local one.
func (r *routeEntry) originName() string {
	if r.idx == nil {
		return ""
	}
	return r.idx.name
}

func makeNode(id string, endpoint bool) Node {
	if isSilent(id) {
		return Node{ID: id, Kind: NodeSilent}
	}
	n := Node{ID: id, Kind: NodeRouter}
	if a, err := netip.ParseAddr(id); err == nil {
		n.Addr = a
	}
	if endpoint {
		n.Kind = NodeHost
	}
	return n
}

// removeRouteLocked deletes r, its key mappings, and drops its references,
// emitting route-remove then link-remove and node-remove for what went.
func (g *Graph) removeRouteLocked(r *routeEntry) {
	if g.routes[r.ikey] != r {
		return
	}
	delete(g.routes, r.ikey)
	delete(g.pending, r)
	if r.local {
		for k := range r.keys {
			if g.keys[k] == r {
				delete(g.keys, k)
			}
		}
	} else if r.idx != nil {
		r.idx.drop(r)
	}
	g.emitLocked(Event{Type: EventRouteRemove, Route: g.routeCopyLocked(r)})
	last := r.nHops() - 1
	for i := 1; i <= last; i++ {
		lid := LinkID{Src: g.hopAtLocked(r, i-1), Dst: g.hopAtLocked(r, i)}
		l := g.links[lid]
		if l == nil {
			continue
		}
		l.refs--
		if l.refs <= 0 {
			delete(g.links, lid)
			g.emitLocked(Event{Type: EventLinkRemove, Link: &Link{LinkID: lid}})
		}
	}
	for i := 0; i <= last; i++ {
		h := g.hopAtLocked(r, i)
		n := g.nodes[h]
		if n == nil {
			continue
		}
		n.refs--
		if i == 0 || i == last {
			n.endpoints--
			if n.endpoints <= 0 && n.node.Kind == NodeHost && n.refs > 0 {
				n.node.Kind = NodeRouter
			}
		}
		if n.refs <= 0 {
			delete(g.nodes, h)
			g.unnumberNodeLocked(n)
			nc := n.node
			g.emitLocked(Event{Type: EventNodeRemove, Node: &nc})
		}
	}
	g.unrefPathLocked(r.path)
	g.dropSlotLocked(r)
	g.hops -= last + 1
}

// metricsOf returns r's metrics, computing them from the flow state when
// stale. Safe under the read lock (mmu serialises concurrent readers).
func (r *routeEntry) metricsOf() Metrics {
	r.mmu.Lock()
	defer r.mmu.Unlock()
	return r.metricsLocked()
}

// metricsLocked is metricsOf under r.mmu.
func (r *routeEntry) metricsLocked() Metrics {
	if r.local && r.dirty {
		keys := r.sortedKeysLocked()
		flows := make([]*flowState, len(keys))
		for i, k := range keys {
			flows[i] = r.keys[k]
		}
		m, parts := r.win.summarize(flows)
		r.baseVals = r.observeBasesLocked(keys, parts)
		finishMetrics(&m, parts, r.baseVals)
		r.metrics = m
		r.dirty = false
	}
	return r.metrics
}

// finishMetrics adds to m, the window's summary, what comes from its
// parts (in key order) and each key's RTT baseline (bases, same order):
// the per-key counts, the route's baseline and each key's excess.
func finishMetrics(m *Metrics, parts []keyWindow, bases []float64) {
	m.RTTBaseline, m.RTTExcessByKey = keyExcess(parts, bases)
	m.SamplesByKey, m.LostByKey = keyCounts(parts)
}

// keyCounts is each key's samples and lost samples in the window, from
// its part (parts in key order; a key without flow state has none).
func keyCounts(parts []keyWindow) (samples, lost []int) {
	samples, lost = make([]int, len(parts)), make([]int, len(parts))
	for i, p := range parts {
		samples[i], lost[i] = p.sum.n, p.sum.lost
	}
	return samples, lost
}

// observeBasesLocked folds every key's part of the window (parts, in
// keys' order) into its RTT baseline and returns each key's baseline (0
// when unknown: no flow state or baseline, or nothing seen yet). Under
// r.mmu.
func (r *routeEntry) observeBasesLocked(keys []RouteKey, parts []keyWindow) []float64 {
	out := make([]float64, len(keys))
	now := r.now()
	for i, k := range keys {
		if b := r.bases[k]; r.keys[k] != nil && b != nil {
			out[i] = b.observe(now, parts[i].p10)
		}
	}
	return out
}

// keyExcess returns the route's baseline (the lowest of its keys' that
// have an RTT in the window) and each key's excess (its window p50 −
// baseline; -1 when the key has no RTT in the window or no baseline), in
// key order.
func keyExcess(parts []keyWindow, bases []float64) (float64, []float64) {
	out := make([]float64, len(parts))
	low := 0.0
	for i, p := range parts {
		out[i] = -1
		base := bases[i]
		if base <= 0 || p.sum.answered == 0 {
			continue
		}
		out[i] = max(p.p50-base, 0)
		if low == 0 || base < low {
			low = base
		}
	}
	return low, out
}

// byKeyFor drops m's per-key lists when they no longer match the route's
// keys (an imported route lost a key before its member sent new metrics):
// a snapshot never pairs a value with the wrong key.
func byKeyFor(m Metrics, keys int) Metrics {
	if len(m.RTTExcessByKey) != keys {
		m.RTTExcessByKey = nil
	}
	if len(m.SamplesByKey) != keys || len(m.LostByKey) != keys {
		m.SamplesByKey, m.LostByKey = nil, nil
	}
	return m
}

// routeCopyLocked returns a deep copy of r with current metrics.
func (g *Graph) routeCopyLocked(r *routeEntry) *Route {
	rt := Route{
		ID:      r.routeID(),
		Src:     r.srcAddr(),
		Dst:     r.dstAddr(),
		Hops:    g.hopListLocked(r),
		Keys:    slices.Clone(r.keysOf()),
		Metrics: byKeyFor(r.metricsOf(), r.numKeys()),
		Origin:  r.originName(),
		HopRTTs: slices.Clone(r.hopRTT),
	}
	return &rt
}

func compareKeys(a, b RouteKey) int {
	if c := a.Src.Compare(b.Src); c != 0 {
		return c
	}
	if c := a.Dst.Compare(b.Dst); c != 0 {
		return c
	}
	return cmp.Compare(a.SrcPort, b.SrcPort)
}

func compareLinkIDs(a, b LinkID) int {
	if c := cmp.Compare(a.Src, b.Src); c != 0 {
		return c
	}
	return cmp.Compare(a.Dst, b.Dst)
}

// maybeUpdateLocked emits a route-update for r unless one went out less than
// CoalesceInterval ago, in which case it is owed (Flush or a later sample).
func (g *Graph) maybeUpdateLocked(r *routeEntry) {
	now := g.cfg.Now()
	if g.sinceUpdate(r, now) >= g.cfg.CoalesceInterval {
		g.coalescedUpdateLocked(r, now)
		return
	}
	g.pending[r] = struct{}{}
}

func (g *Graph) updateNowLocked(r *routeEntry) { g.updateAtLocked(r, g.cfg.Now()) }

func (g *Graph) updateAtLocked(r *routeEntry, now time.Time) {
	delete(g.pending, r)
	g.setUpdated(r, now)
	g.emitLocked(Event{Type: EventRouteUpdate, Route: g.routeCopyLocked(r)})
}

// Flush emits the route-update events that coalescing held back and whose
// interval has passed. Run calls it every CoalesceInterval; callers without
// Run may call it themselves.
func (g *Graph) Flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		return
	}
	now := g.cfg.Now()
	rs := make([]*routeEntry, 0, len(g.pending))
	for r := range g.pending {
		if g.sinceUpdate(r, now) >= g.cfg.CoalesceInterval {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *routeEntry) int { return cmp.Compare(a.ikey, b.ikey) })
	for _, r := range rs {
		g.coalescedUpdateLocked(r, now)
	}
	if len(rs) > 0 {
		g.snaps.drop() // a new event id
	}
}

// Run flushes coalesced route updates every CoalesceInterval until ctx ends.
// It is optional: without it, held-back updates go out with the route's next
// sample after the interval.
func (g *Graph) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.CoalesceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.Flush()
		}
	}
}

// Snapshot copies the whole graph, sorted (nodes and links by ID, routes by
// origin then ID), at the current event id. The copy is the caller's: it
// is a deep copy of the shared snapshot SnapshotView returns.
func (g *Graph) Snapshot() Snapshot {
	return cloneSnapshot(g.SnapshotView())
}

// snapshotLocked copies the graph under the read lock. The routes' Hops,
// Keys, HopRTTs and Metrics.RTTExcessByKey are the graph's own slices,
// which it replaces and never modifies: readers of the result must not
// modify them either (Snapshot and subscriptions get deep copies).
func (g *Graph) snapshotLocked() Snapshot {
	s := Snapshot{
		EventID: g.events.last,
		Nodes:   make([]Node, 0, len(g.nodes)),
		Links:   make([]Link, 0, len(g.links)),
		Routes:  make([]Route, 0, len(g.routes)),
	}
	for _, n := range g.nodes {
		s.Nodes = append(s.Nodes, n.node)
	}
	slices.SortFunc(s.Nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	for id, l := range g.links {
		s.Links = append(s.Links, Link{LinkID: id, Routes: l.refs})
	}
	slices.SortFunc(s.Links, func(a, b Link) int { return compareLinkIDs(a.LinkID, b.LinkID) })
	rs := make([]*routeEntry, 0, len(g.routes))
	for _, r := range g.routes {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *routeEntry) int { return cmp.Compare(a.ikey, b.ikey) })
	for _, r := range rs {
		s.Routes = append(s.Routes, Route{
			ID: r.routeID(), Src: r.srcAddr(), Dst: r.dstAddr(), Hops: g.hopListLocked(r), Keys: r.keysOf(),
			Metrics: r.metricsOf(), Origin: r.originName(), HopRTTs: r.hopRTT,
		})
	}
	return s
}

// keyBaselineLocked gives a local key of r its RTT baseline: the one of
// (r's hop list, key), kept across path changes, created when new. Stale
// baselines are dropped when the map has grown past twice the keys.
func (g *Graph) keyBaselineLocked(r *routeEntry, k RouteKey, f *flowState) {
	if f == nil {
		return
	}
	bk := baselineKey{ikey: r.ikey, key: k}
	b := g.baselines[bk]
	if b == nil {
		if len(g.baselines) > 2*len(g.keys)+64 {
			now := g.cfg.Now()
			for k, b := range g.baselines {
				if b.stale(now) {
					delete(g.baselines, k)
				}
			}
		}
		b = newBaseline(g.cfg.BaselineWindow)
		g.baselines[bk] = b
	}
	if r.bases == nil {
		r.bases = make(map[RouteKey]*baseline)
	}
	r.bases[k] = b
}

// baselineKey names a round trip: the forward hop list (the route's
// internal key) and the flow, whose reverse path the flow's port picks.
type baselineKey struct {
	ikey string
	key  RouteKey
}
