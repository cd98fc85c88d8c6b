package graph

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// ResetPeer empties the flow state of every local route key from or to
// addr and makes them refuse samples sent before since: the peer restarted,
// and pings lost while it was down (including ones still in flight now)
// describe its downtime, not the links between us. Routes and their RTT
// baselines stay; each emptied route gets a route-update at once, so a
// subscriber's copy (the aggregator's) drops the old metrics too. It returns
// how many keys were reset.
func (g *Graph) ResetPeer(addr netip.Addr, since time.Time) int {
	addr = addr.Unmap()
	g.lockChange()
	defer g.mu.Unlock()
	var touched []*routeEntry
	n := 0
	for k, r := range g.keys {
		if k.Src != addr && k.Dst != addr {
			continue
		}
		f := r.keys[k]
		if f == nil {
			continue
		}
		f.reset(since)
		r.win.stamp(f, nil)
		r.win.resetJitter()
		n++
		if !slices.Contains(touched, r) {
			touched = append(touched, r)
		}
	}
	slices.SortFunc(touched, func(a, b *routeEntry) int { return cmp.Compare(a.ikey, b.ikey) })
	for _, r := range touched {
		r.mmu.Lock()
		r.dirty = true
		r.mmu.Unlock()
		g.updateNowLocked(r)
	}
	return n
}

// LastAnswer is when the latest answered ping to addr on any local route
// key was sent (zero when none since the key's flow state began: a new
// route key, a path change or ResetPeer): whether a peer that gossip
// declared dead still answers on some path.
func (g *Graph) LastAnswer(addr netip.Addr) time.Time {
	addr = addr.Unmap()
	g.mu.RLock()
	defer g.mu.RUnlock()
	var last time.Time
	for k, r := range g.keys {
		if k.Dst != addr {
			continue
		}
		if f := r.keys[k]; f != nil && f.lastAnswer != noStamp {
			if t := unstamp(f.lastAnswer); t.After(last) {
				last = t
			}
		}
	}
	return last
}
