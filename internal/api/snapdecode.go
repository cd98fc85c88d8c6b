package api

import (
	"io"
	"math"
	"net/netip"
	"slices"

	"github.com/dnms/dnms/internal/graph"
)

// snapDecoder decodes a graph document (/v1/graph, /v1/aggregator/graph)
// for `dnms health`, reading only what health needs: node ids, kinds and
// addresses, edges, and of each route its id, hops, key ports, metrics and
// origin. The route and key addresses, hop RTTs and since are skipped
// unparsed. Hop names, origins and sources are interned, and the hop and
// excess lists of all routes share a few large slices.
//
// When the nodes and edges come before the routes (as /v1/graph writes
// them), each route is checked and handed to a graph.HealthInput as soon
// as it is read and never kept as a graph.Route; otherwise the routes are
// kept and handed over at the end.
type snapDecoder struct {
	s      *jsonScanner
	doc    healthDoc
	snap   graph.Snapshot
	names  map[string]string // interned strings
	hops   []string          // arena the routes' hop lists are cut from
	keys   []graph.RouteKey  // the current route's keys (ports are copied out)
	excess []float64         // arena of rttExcessByKeySeconds lists
	counts []int             // arena of samplesByKey and lostByKey lists
	seen   uint8             // seenNodes | seenEdges
	cur    graph.Route       // the route being read, when streaming
	hopNum []int32           // the numbers of cur's hops (graph.HealthInput.Node)
	keep   bool              // keep the routes in snap (tests), never stream
	// reserve is how many routes to make room for at once (0: grow as
	// they come).
	reserve int
}

const (
	seenNodes = 1 << iota
	seenEdges
)

// healthDoc is what `dnms health` reads of a graph document: the checked
// estimator input, or why the graph is inconsistent.
type healthDoc struct {
	eventID              uint64
	nodes, links, routes int
	input                *graph.HealthInput
	invalid              error // the first inconsistency (graph.Validate's)
}

func newSnapDecoder(r io.Reader) *snapDecoder {
	return &snapDecoder{s: newJSONScanner(r), names: make(map[string]string)}
}

// decode reads the whole document.
func (d *snapDecoder) decode() (healthDoc, error) {
	if err := d.object(); err != nil {
		return d.doc, err
	}
	d.doc.eventID, d.doc.nodes, d.doc.links = d.snap.EventID, len(d.snap.Nodes), len(d.snap.Links)
	if d.doc.input == nil && d.doc.invalid == nil { // routes came before nodes or edges, or none
		d.start()
	}
	for i := range d.snap.Routes {
		d.add(&d.snap.Routes[i], nil)
	}
	return d.doc, nil
}

// start checks the nodes and edges and makes the input routes go to.
func (d *snapDecoder) start() {
	d.doc.input, d.doc.invalid = graph.NewHealthInput(d.snap.Nodes, d.snap.Links)
	if d.doc.input != nil {
		d.doc.input.Reserve(d.reserve)
	}
}

// add checks one route and hands it to the input, with its hops'
// numbers when the decoder looked them up (else nil).
func (d *snapDecoder) add(r *graph.Route, hops []int32) {
	d.doc.routes++
	if d.doc.invalid == nil {
		d.doc.invalid = d.doc.input.AddNumbered(r, hops)
	}
}

// object reads the top-level object.
func (d *snapDecoder) object() error {
	c, ok := d.s.peek()
	if !ok {
		if d.s.rerr != nil && d.s.rerr != io.EOF {
			return d.s.rerr
		}
		return errEmpty
	}
	switch {
	case c == '{':
	case c == '[' || c == '"' || c == '-' || '0' <= c && c <= '9' || c == 't' || c == 'f' || c == 'n':
		return errNotGraph
	default:
		return d.s.errorf("invalid character %s looking for beginning of value", quoteByte(c))
	}
	snap := &d.snap
	err := d.s.fields("graph document", func(key []byte) error {
		switch string(key) {
		case "eventId":
			if null, err := d.s.null(); null || err != nil {
				return err
			}
			v, err := d.s.uint64("eventId")
			snap.EventID = v
			return err
		case "nodes":
			d.seen |= seenNodes
			return d.s.elements("nodes", func() error {
				snap.Nodes = append(snap.Nodes, graph.Node{})
				return d.node(&snap.Nodes[len(snap.Nodes)-1])
			})
		case "edges":
			d.seen |= seenEdges
			return d.s.elements("edges", func() error {
				snap.Links = append(snap.Links, graph.Link{})
				return d.link(&snap.Links[len(snap.Links)-1])
			})
		case "routes":
			if d.seen == seenNodes|seenEdges && d.doc.input == nil && d.doc.invalid == nil && !d.keep {
				d.start()
			}
			if d.doc.input != nil || d.doc.invalid != nil {
				return d.streamRoutes()
			}
			return d.routes(&snap.Routes)
		}
		return d.s.skip(1)
	})
	if err != nil {
		return err
	}
	if _, more := d.s.peek(); more {
		return errTrailing
	}
	if d.s.rerr != nil && d.s.rerr != io.EOF {
		return d.s.rerr
	}
	return nil
}

// streamRoutes reads the routes array, handing each route to the input.
func (d *snapDecoder) streamRoutes() error {
	return d.s.elements("routes", func() error {
		d.cur = graph.Route{}
		d.keys = d.keys[:0]
		d.hopNum = d.hopNum[:0]
		if err := d.route(&d.cur); err != nil {
			return err
		}
		if len(d.hopNum) != len(d.cur.Hops) { // not numbered (no input, or hops twice)
			d.add(&d.cur, nil)
			return nil
		}
		d.add(&d.cur, d.hopNum)
		return nil
	})
}

// str reads a string field (null leaves it as it is).
func (d *snapDecoder) str(what string, dst *string, intern bool) error {
	if null, err := d.s.null(); null || err != nil {
		return err
	}
	b, err := d.s.str(what)
	if err != nil {
		return err
	}
	*dst = d.string(b, intern)
	return nil
}

// string returns b as a string, interned when asked.
func (d *snapDecoder) string(b []byte, intern bool) string {
	if !intern {
		return string(b)
	}
	if v, ok := d.names[string(b)]; ok {
		return v
	}
	v := string(b)
	d.names[v] = v
	return v
}

func (d *snapDecoder) int(what string, dst *int) error {
	if null, err := d.s.null(); null || err != nil {
		return err
	}
	v, err := d.s.integer(what, math.MinInt, math.MaxInt)
	*dst = int(v)
	return err
}

func (d *snapDecoder) float(what string, dst *float64) error {
	if null, err := d.s.null(); null || err != nil {
		return err
	}
	v, err := d.s.float(what)
	*dst = v
	return err
}

func (d *snapDecoder) node(n *graph.Node) error {
	return d.s.fields("node", func(key []byte) error {
		switch string(key) {
		case "id":
			return d.str("node id", &n.ID, true)
		case "kind":
			var k string
			err := d.str("node kind", &k, true)
			n.Kind = graph.NodeKind(k)
			return err
		case "addr":
			var a string
			if err := d.str("node addr", &a, false); err != nil || a == "" {
				return err
			}
			addr, err := netip.ParseAddr(a)
			if err != nil {
				return d.s.errorf("node addr: %v", err)
			}
			n.Addr = addr
			return nil
		}
		return d.s.skip(1)
	})
}

func (d *snapDecoder) link(l *graph.Link) error {
	return d.s.fields("edge", func(key []byte) error {
		switch string(key) {
		case "src":
			return d.str("edge src", &l.Src, true)
		case "dst":
			return d.str("edge dst", &l.Dst, true)
		case "routes":
			return d.int("edge routes", &l.Routes)
		}
		return d.s.skip(1)
	})
}

// routes appends the routes array to *out (when they cannot be streamed). They are read in chunks and
// copied once into a slice of the right size: growing one slice of 500k
// routes by appending copied it over and over (seconds of page faults).
func (d *snapDecoder) routes(out *[]graph.Route) error {
	var chunks [][]graph.Route
	cur := make([]graph.Route, 0, 1024)
	err := d.s.elements("routes", func() error {
		if len(cur) == cap(cur) {
			chunks = append(chunks, cur)
			cur = make([]graph.Route, 0, min(2*cap(cur), 64<<10))
		}
		cur = append(cur, graph.Route{})
		return d.route(&cur[len(cur)-1])
	})
	chunks = append(chunks, cur)
	n := len(*out)
	for _, c := range chunks {
		n += len(c)
	}
	*out = slices.Grow(*out, n-len(*out))
	for _, c := range chunks {
		*out = append(*out, c...)
	}
	return err
}

func (d *snapDecoder) route(r *graph.Route) error {
	return d.s.fields("route", func(key []byte) error {
		switch string(key) {
		case "id":
			return d.str("route id", &r.ID, false)
		case "origin":
			return d.str("route origin", &r.Origin, true)
		case "hops":
			return d.hopList(&r.Hops)
		case "keys":
			return d.keyList(&r.Keys)
		case "metrics":
			return d.metrics(&r.Metrics)
		}
		return d.s.skip(1)
	})
}

// arenaChunk is how many elements a fresh arena holds at most (they
// start small and double).
const arenaChunk = 1 << 16

// arenaList reads an array onto the end of *arena with read and returns
// the elements read (nil for null, as with encoding/json). The lists of
// all routes share arenas, so a route's list is no allocation of its own.
func arenaList[T any](s *jsonScanner, what string, arena *[]T, read func(*T) error) ([]T, error) {
	start := len(*arena)
	empty := true
	err := s.elements(what, func() error {
		empty = false
		if a := *arena; len(a) == cap(a) { // move this list to a fresh arena
			*arena = append(make([]T, 0, max(min(2*cap(a), arenaChunk), 2*(len(a)-start), 16)), a[start:]...)
			start = 0
		}
		var v T
		*arena = append(*arena, v)
		return read(&(*arena)[len(*arena)-1])
	})
	if empty {
		if err != nil || !s.wasArray {
			return nil, err
		}
		return []T{}, nil
	}
	a := *arena
	return a[start:len(a):len(a)], err
}

func (d *snapDecoder) hopList(dst *[]string) (err error) {
	d.hopNum = d.hopNum[:0]
	*dst, err = arenaList(d.s, "hops", &d.hops, func(h *string) error {
		b, err := d.s.str("hop")
		if d.doc.input != nil && !d.keep {
			// Numbered and interned by the nodes list: one lookup.
			n, name, ok := d.doc.input.Node(b)
			d.hopNum = append(d.hopNum, n)
			if ok {
				*h = name
				return err
			}
		}
		*h = d.string(b, true)
		return err
	})
	return err
}

// keyList reads the source port of each of a route's keys.
func (d *snapDecoder) keyList(dst *[]graph.RouteKey) (err error) {
	*dst, err = arenaList(d.s, "keys", &d.keys, func(k *graph.RouteKey) error {
		return d.s.fields("key", func(key []byte) error {
			if string(key) != "srcPort" {
				return d.s.skip(1)
			}
			if null, err := d.s.null(); null || err != nil {
				return err
			}
			v, err := d.s.integer("key srcPort", 0, math.MaxUint16)
			k.SrcPort = uint16(v)
			return err
		})
	})
	return err
}

func (d *snapDecoder) excessList(dst *[]float64) (err error) {
	*dst, err = arenaList(d.s, "rttExcessByKeySeconds", &d.excess, func(v *float64) error {
		return d.float("rttExcessByKeySeconds", v)
	})
	return err
}

// countList reads samplesByKey or lostByKey.
func (d *snapDecoder) countList(what string, dst *[]int) (err error) {
	*dst, err = arenaList(d.s, what, &d.counts, func(v *int) error {
		return d.int(what, v)
	})
	return err
}

func (d *snapDecoder) metrics(m *graph.Metrics) error {
	return d.s.fields("metrics", func(key []byte) error {
		if f := metricFloat(m, key); f != nil {
			return d.float("metrics", f)
		}
		switch string(key) {
		case "samples":
			return d.int("metrics samples", &m.Samples)
		case "lost":
			return d.int("metrics lost", &m.Lost)
		case "lostForward":
			return d.int("metrics lostForward", &m.LostForward)
		case "lostReverse":
			return d.int("metrics lostReverse", &m.LostReverse)
		case "source":
			var s string
			err := d.str("metrics source", &s, true)
			m.Source = graph.TimeSource(s)
			return err
		case "rttExcessByKeySeconds":
			return d.excessList(&m.RTTExcessByKey)
		case "samplesByKey":
			return d.countList("metrics samplesByKey", &m.SamplesByKey)
		case "lostByKey":
			return d.countList("metrics lostByKey", &m.LostByKey)
		}
		return d.s.skip(1) // since
	})
}

// metricFloat is the float field of m named key, or nil.
func metricFloat(m *graph.Metrics, key []byte) *float64 {
	switch string(key) {
	case "loss":
		return &m.Loss
	case "lossForward":
		return &m.LossForward
	case "lossReverse":
		return &m.LossReverse
	case "rttMinSeconds":
		return &m.RTTMin
	case "rttAvgSeconds":
		return &m.RTTAvg
	case "rttP50Seconds":
		return &m.RTTP50
	case "rttP99Seconds":
		return &m.RTTP99
	case "rttMaxSeconds":
		return &m.RTTMax
	case "jitterRfc3550Seconds":
		return &m.JitterRFC3550
	case "jitterStddevSeconds":
		return &m.JitterStddev
	case "rttBaselineSeconds":
		return &m.RTTBaseline
	}
	return nil
}
