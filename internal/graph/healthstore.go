package graph

import "github.com/dnms/dnms/internal/localize"

// The estimator's input of imported routes, kept up to date as routes
// change (issue 10: aggregator health ≤ 1 s at 1 000 agents).
//
// Every imported route has a slot in one dense array, written where the
// route's keys or metrics change (under the graph's write lock). A health
// run reads the array in order instead of walking the route map and each
// route's record, path and endpoint nodes: at 275 k routes that walk was
// a third of the run, nearly all cache misses. A slot holds what the
// estimator reads, aliasing the route's slices (replaced, never
// modified); it costs 88 B a route.

// healthSlot is one imported route's estimator input.
type healthSlot struct {
	r        *routeEntry // the slot's route (its slot index is r.slot)
	ports    []uint16    // the route's key ports, in key order
	excess   []float64   // per port, or nil
	path     *fabricPath
	from, to int32 // endpoint node numbers
	samples  int32
	lost     int32
	lostFwd  int32
	lostRev  int32
}

// addSlotLocked gives a new imported route its slot.
func (g *Graph) addSlotLocked(r *routeEntry) {
	r.slot = int32(len(g.slots))
	g.slots = append(g.slots, healthSlot{r: r, path: r.path, from: r.from.num, to: r.to.num})
}

// dropSlotLocked frees a removed imported route's slot (the last slot
// moves into it).
func (g *Graph) dropSlotLocked(r *routeEntry) {
	last := len(g.slots) - 1
	if r.slot < 0 || int(r.slot) > last || g.slots[r.slot].r != r {
		return
	}
	g.slots[r.slot] = g.slots[last]
	g.slots[r.slot].r.slot = r.slot
	g.slots[last] = healthSlot{}
	g.slots = g.slots[:last]
	r.slot = -1
}

// syncSlotLocked copies an imported route's keys and metrics into its
// slot, after they changed.
func (g *Graph) syncSlotLocked(r *routeEntry) {
	if r.local || r.slot < 0 || int(r.slot) >= len(g.slots) || g.slots[r.slot].r != r {
		return
	}
	s := &g.slots[r.slot]
	if kl := r.importedKeyList(); r.ports != nil || kl == nil {
		s.ports = r.ports
	} else {
		s.ports = make([]uint16, len(kl))
		for i, k := range kl {
			s.ports[i] = k.SrcPort
		}
	}
	m := &r.metrics
	s.excess = nil
	if len(m.RTTExcessByKey) == len(s.ports) {
		s.excess = m.RTTExcessByKey
	}
	s.samples, s.lost = clamp32(m.Samples), clamp32(m.Lost)
	s.lostFwd, s.lostRev = clamp32(m.LostForward), clamp32(m.LostReverse)
}

// clamp32 is n within int32 (counts of one window never come near).
func clamp32(n int) int32 { return int32(max(min(n, 1<<31-1), -1<<31)) }

// input is the slot's estimator input, its hops appended to nodes as
// node numbers.
func (s *healthSlot) input(nodes []int32) (localize.Input, []int32) {
	start := len(nodes)
	nodes = append(nodes, s.from)
	for i := range s.path.len() {
		nodes = append(nodes, s.path.num(i))
	}
	nodes = append(nodes, s.to)
	return localize.Input{
		Nodes:       nodes[start:len(nodes):len(nodes)],
		Ports:       s.ports,
		Samples:     int(s.samples),
		Lost:        int(s.lost),
		LostForward: int(s.lostFwd),
		LostReverse: int(s.lostRev),
		Excess:      s.excess,
	}, nodes
}
