package graph

import "github.com/dnms/dnms/internal/localize"

// The estimator's input of imported routes, kept up to date as routes
// change (issue 10: aggregator health ≤ 1 s at 1 000 agents).
//
// Every imported route has a slot in one dense table, written where the
// route's keys or metrics change (under the graph's write lock). A health
// run reads the array in order instead of walking the route map and each
// route's record, path and endpoint nodes: at 275 k routes that walk was
// a third of the run, nearly all cache misses. A slot holds what the
// estimator reads, aliasing the route's slices (replaced, never
// modified); it costs 88 B a route.

// healthSlot is one imported route's estimator input.
type healthSlot struct {
	r      *routeEntry // the slot's route (its slot index is r.slot)
	ports  []uint16    // the route's key ports, in key order
	excess []float64   // per port, or nil
	// per port, or nil: samples and lost samples (Metrics.SamplesByKey)
	samplesByKey, lostByKey []int
	path                    *fabricPath
	from, to                int32 // endpoint node numbers
	samples                 int32
	lost                    int32
	lostFwd                 int32
	lostRev                 int32
}

// slotTable holds the slots in order, in fixed-size chunks: adding one
// never copies the others (one array grown by append was copied over and
// over during a merge, and every GC cycle scanned it as one object).
type slotTable struct {
	chunks [][]healthSlot
	n      int
}

const slotChunk = 1 << 12 // slots a chunk (≈ 350 KiB)

func (t *slotTable) len() int { return t.n }

// at is slot i (< len).
func (t *slotTable) at(i int) *healthSlot { return &t.chunks[i/slotChunk][i%slotChunk] }

// of is r's slot, or nil when r has none.
func (t *slotTable) of(r *routeEntry) *healthSlot {
	if r.local || r.slot < 0 || int(r.slot) >= t.n {
		return nil
	}
	if s := t.at(int(r.slot)); s.r == r {
		return s
	}
	return nil
}

// add appends s, whose route takes the new slot.
func (t *slotTable) add(s healthSlot) {
	if t.n == len(t.chunks)*slotChunk {
		t.chunks = append(t.chunks, make([]healthSlot, slotChunk))
	}
	s.r.slot = int32(t.n)
	*t.at(t.n) = s
	t.n++
}

// remove frees r's slot: the last slot moves into it. A chunk is let go
// when the one before it has emptied too, so a table at a chunk boundary
// does not allocate and free a chunk on every add and remove.
func (t *slotTable) remove(r *routeEntry) {
	s := t.of(r)
	if s == nil {
		return
	}
	last := t.at(t.n - 1)
	*s = *last
	s.r.slot = r.slot
	*last = healthSlot{}
	t.n--
	r.slot = -1
	if len(t.chunks) > 1 && t.n <= (len(t.chunks)-2)*slotChunk {
		t.chunks[len(t.chunks)-1] = nil
		t.chunks = t.chunks[:len(t.chunks)-1]
	}
}

// addSlotLocked gives a new imported route its slot.
func (g *Graph) addSlotLocked(r *routeEntry) {
	g.slots.add(healthSlot{r: r, path: r.path, from: r.from.num, to: r.to.num})
}

// dropSlotLocked frees a removed imported route's slot.
func (g *Graph) dropSlotLocked(r *routeEntry) { g.slots.remove(r) }

// syncSlotLocked copies an imported route's keys and metrics into its
// slot, after they changed.
func (g *Graph) syncSlotLocked(r *routeEntry) {
	s := g.slots.of(r)
	if s == nil {
		return
	}
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
	s.samplesByKey, s.lostByKey = nil, nil
	if len(m.SamplesByKey) == len(s.ports) && len(m.LostByKey) == len(s.ports) {
		s.samplesByKey, s.lostByKey = m.SamplesByKey, m.LostByKey
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
		Nodes:        nodes[start:len(nodes):len(nodes)],
		Ports:        s.ports,
		Samples:      int(s.samples),
		Lost:         int(s.lost),
		LostForward:  int(s.lostFwd),
		LostReverse:  int(s.lostRev),
		Excess:       s.excess,
		SamplesByKey: s.samplesByKey,
		LostByKey:    s.lostByKey,
	}, nodes
}
