package graph

import (
	"fmt"

	"github.com/dnms/dnms/internal/localize"
)

// HealthConfig tunes the estimator (see localize.Config). The zero value of
// a field means its default.
type HealthConfig = localize.Config

// DefaultHealthConfig returns the estimator defaults.
func DefaultHealthConfig() HealthConfig { return localize.DefaultConfig() }

// HealthOf ranks the links of a saved snapshot (the /v1/graph or aggregator
// document; `dnms health -f`) with the default HealthConfig, after checking
// that the snapshot is consistent.
func HealthOf(s Snapshot) ([]LinkHealth, error) {
	return HealthOfConfig(s, DefaultHealthConfig())
}

// HealthOfConfig is HealthOf with explicit estimator settings.
func HealthOfConfig(s Snapshot, hc HealthConfig) ([]LinkHealth, error) {
	b, err := NewHealthInput(s.Nodes, s.Links)
	if err != nil {
		return nil, err
	}
	for i := range s.Routes {
		if err := b.Add(&s.Routes[i]); err != nil {
			return nil, err
		}
	}
	return b.Run(hc), nil
}

// Validate checks a snapshot: unique node IDs, links between known nodes,
// routes of at least two hops over known nodes and listed links, and sane
// counts (non-negative, lost <= samples, forward+reverse <= lost).
func Validate(s Snapshot) error {
	b, err := NewHealthInput(s.Nodes, s.Links)
	if err != nil {
		return err
	}
	for i := range s.Routes {
		if err := b.check(&s.Routes[i], nil); err != nil {
			return err
		}
		b.n++
	}
	return nil
}

// HealthInput is the estimator's input of a snapshot, checked and
// collected one route at a time (as Validate checks it), so a decoder can
// hand over each route as it reads it instead of holding every Route.
// Nodes are numbered once; hops and links are checked by number.
type HealthInput struct {
	nodes map[string]int32
	names []string            // node number → id
	links map[uint64]struct{} // src<<32 | dst, by node number
	in    []localize.Input    // the last routes added
	full  [][]localize.Input  // the routes before them, in chunks
	ports []uint16            // the Ports of in, cut from one buffer
	nums  []int32             // the Nodes of in (hops by node number), cut from one buffer
	n     int                 // routes checked
}

// NewHealthInput checks the nodes and links of a snapshot.
func NewHealthInput(nodes []Node, links []Link) (*HealthInput, error) {
	b := &HealthInput{nodes: make(map[string]int32, len(nodes)), names: make([]string, len(nodes)),
		links: make(map[uint64]struct{}, len(links))}
	for i, n := range nodes {
		if n.ID == "" {
			return nil, fmt.Errorf("node %d: empty id", i)
		}
		if _, dup := b.nodes[n.ID]; dup {
			return nil, fmt.Errorf("node %q listed twice", n.ID)
		}
		b.nodes[n.ID] = int32(i)
		b.names[i] = n.ID
	}
	for _, l := range links {
		s, ok := b.nodes[l.Src]
		if !ok {
			return nil, fmt.Errorf("edge %s→%s: unknown source node %q", l.Src, l.Dst, l.Src)
		}
		d, ok := b.nodes[l.Dst]
		if !ok {
			return nil, fmt.Errorf("edge %s→%s: unknown destination node %q", l.Src, l.Dst, l.Dst)
		}
		if l.Routes < 0 {
			return nil, fmt.Errorf("edge %s→%s: negative route count %d", l.Src, l.Dst, l.Routes)
		}
		b.links[uint64(s)<<32|uint64(d)] = struct{}{}
	}
	return b, nil
}

// Add checks the next route of the snapshot and keeps what the estimator
// reads of it. The input aliases r.Hops and r.Metrics's per-key slices: the
// caller must not change them afterwards (r itself may be reused).
func (b *HealthInput) Add(r *Route) error { return b.AddNumbered(r, nil) }

// Node returns the number of the node named name and its id (the string
// the nodes list holds, for interning), or false when there is no such
// node.
func (b *HealthInput) Node(name []byte) (int32, string, bool) {
	n, ok := b.nodes[string(name)]
	if !ok {
		return -1, "", false
	}
	return n, b.names[n], true
}

// AddNumbered is Add for a decoder that numbered the hops itself (Node):
// hops[j] is the number of r.Hops[j], -1 for an unknown node; nil means
// look them up.
func (b *HealthInput) AddNumbered(r *Route, hops []int32) error {
	if cap(b.nums)-len(b.nums) < len(r.Hops) {
		// A fresh chunk, never a copy: earlier routes' Nodes point into
		// the old ones.
		b.nums = make([]int32, 0, max(1<<16, len(r.Hops)))
	}
	start := len(b.nums)
	if err := b.check(r, hops); err != nil {
		b.nums = b.nums[:start]
		return err
	}
	b.n++
	if len(b.in) == cap(b.in) {
		// Filled in chunks, joined once by Run: append grows a large
		// slice by a quarter at a time, which allocated (and faulted in)
		// a 500k-route input five times over.
		if len(b.in) > 0 {
			b.full = append(b.full, b.in)
		}
		b.in = make([]localize.Input, 0, min(64<<10, max(1024, 2*cap(b.in))))
	}
	var x localize.Input
	x, b.ports = inputOf(nil, r.Keys, r.Metrics, b.ports)
	// By node number (RunNumbered): no hop names to hash in the
	// estimator, and no string headers to keep and scan.
	x.Nodes = b.nums[start:len(b.nums):len(b.nums)]
	b.in = append(b.in, x)
	return nil
}

// Reserve makes room for n routes at once (a hint: more still fit).
func (b *HealthInput) Reserve(n int) {
	if n > cap(b.in) && b.n == 0 {
		b.in = make([]localize.Input, 0, n)
	}
}

// Len is how many routes were added.
func (b *HealthInput) Len() int { return b.n }

// Run ranks the links of the routes added.
func (b *HealthInput) Run(hc HealthConfig) []LinkHealth {
	if len(b.full) > 0 {
		all := make([]localize.Input, 0, b.n)
		for _, c := range b.full {
			all = append(all, c...)
		}
		b.in, b.full = append(all, b.in...), nil
	}
	return localize.RunNumbered(b.names, b.in, hc)
}

// check checks route number b.n, its hops numbered by hops when not nil.
func (b *HealthInput) check(r *Route, hops []int32) error {
	name := routeName{b.n, r}
	if r.ID == "" {
		return fmt.Errorf("%s: empty id", name)
	}
	if len(r.Hops) < 2 {
		return fmt.Errorf("%s: %d hops, need at least source and destination", name, len(r.Hops))
	}
	if hops != nil && len(hops) != len(r.Hops) {
		return fmt.Errorf("%s: %d hop numbers for %d hops", name, len(hops), len(r.Hops))
	}
	var prev int32
	for j, h := range r.Hops {
		var id int32
		ok := true
		if hops != nil {
			id = hops[j]
			ok = id >= 0 && int(id) < len(b.names)
		} else {
			id, ok = b.nodes[h]
		}
		if !ok {
			return fmt.Errorf("%s: hop %d %q is not a known node", name, j, h)
		}
		b.nums = append(b.nums, id)
		if j > 0 {
			if _, ok := b.links[uint64(prev)<<32|uint64(id)]; !ok {
				return fmt.Errorf("%s: hops %d→%d (%s→%s) are not a known edge", name, j-1, j, r.Hops[j-1], h)
			}
		}
		prev = id
	}
	m := &r.Metrics
	switch {
	case m.Samples < 0 || m.Lost < 0 || m.LostForward < 0 || m.LostReverse < 0:
		return fmt.Errorf("%s: negative count (samples %d, lost %d, forward %d, reverse %d)",
			name, m.Samples, m.Lost, m.LostForward, m.LostReverse)
	case m.Lost > m.Samples:
		return fmt.Errorf("%s: lost %d > samples %d", name, m.Lost, m.Samples)
	case m.LostForward+m.LostReverse > m.Lost:
		return fmt.Errorf("%s: lost forward %d + reverse %d > lost %d", name, m.LostForward, m.LostReverse, m.Lost)
	}
	for _, f := range [...]float64{m.Loss, m.LossForward, m.LossReverse, m.RTTMin, m.RTTAvg, m.RTTP50, m.RTTP99, m.RTTMax, m.JitterRFC3550, m.JitterStddev, m.RTTBaseline} {
		if !finite(f) || f < 0 {
			return fmt.Errorf("%s: metric value %v out of range", name, f)
		}
	}
	if err := validExcess(m.RTTExcessByKey, len(r.Keys)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := validByKey(m, len(r.Keys)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// routeName names a route in a Validate error, formatted only on error.
type routeName struct {
	i int
	r *Route
}

var _ fmt.Stringer = routeName{}

func (n routeName) String() string {
	return fmt.Sprintf("route %d (id %q, origin %q)", n.i, n.r.ID, n.r.Origin)
}

// inputOf is what the estimator reads of a route. hops and keys alias the
// caller's slices; ports is appended to and returned (one buffer for all
// routes).
func inputOf(hops []string, keys []RouteKey, m Metrics, ports []uint16) (localize.Input, []uint16) {
	start := len(ports)
	for _, k := range keys {
		ports = append(ports, k.SrcPort)
	}
	return inputWith(hops, ports[start:len(ports):len(ports)], &m), ports
}

// inputWith is the estimator's input for a route with these hops, key
// ports (in key order) and metrics.
func inputWith(hops []string, ports []uint16, m *Metrics) localize.Input {
	in := localize.Input{
		Hops:        hops,
		Ports:       ports,
		Samples:     m.Samples,
		Lost:        m.Lost,
		LostForward: m.LostForward,
		LostReverse: m.LostReverse,
	}
	if len(m.RTTExcessByKey) == len(ports) {
		in.Excess = m.RTTExcessByKey
	}
	if len(m.SamplesByKey) == len(ports) && len(m.LostByKey) == len(ports) {
		in.SamplesByKey, in.LostByKey = m.SamplesByKey, m.LostByKey
	}
	return in
}

func inputsOf(routes []Route) []localize.Input {
	in := make([]localize.Input, len(routes))
	n := 0
	for _, r := range routes {
		n += len(r.Keys)
	}
	ports := make([]uint16, 0, n)
	for i, r := range routes {
		in[i], ports = inputOf(r.Hops, r.Keys, r.Metrics, ports)
	}
	return in
}

// validByKey checks a route's per-key counts: none, or one per key each,
// with 0 <= lost <= samples.
func validByKey(m *Metrics, keys int) error {
	if len(m.SamplesByKey) != len(m.LostByKey) || (len(m.SamplesByKey) != 0 && len(m.SamplesByKey) != keys) {
		return fmt.Errorf("%d samplesByKey and %d lostByKey values for %d keys", len(m.SamplesByKey), len(m.LostByKey), keys)
	}
	for i, n := range m.SamplesByKey {
		if l := m.LostByKey[i]; n < 0 || l < 0 || l > n {
			return fmt.Errorf("key %d: lost %d of %d samples", i, l, n)
		}
	}
	return nil
}

// validExcess checks a route's per-key RTT excess: none, or one finite
// value per key (-1 for unknown).
func validExcess(ex []float64, keys int) error {
	if len(ex) != 0 && len(ex) != keys {
		return fmt.Errorf("%d rttExcessByKeySeconds values for %d keys", len(ex), keys)
	}
	for _, e := range ex {
		if !finite(e) || (e < 0 && e != -1) {
			return fmt.Errorf("rttExcessByKeySeconds value %v out of range (want >= 0, or -1 for unknown)", e)
		}
	}
	return nil
}
