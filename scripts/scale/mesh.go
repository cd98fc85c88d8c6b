package main

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"unsafe"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/localize"
	"github.com/dnms/dnms/internal/plan/simclos"
)

// meshSet is a cluster's route set in the estimator's own terms: one
// localize.Input per distinct route of every agent to every peer it probes,
// hops as node numbers, built straight from the simulated fabric. The
// localization figures run the estimator on it (localize.RunNumbered, what
// graph.Health runs on the aggregator's routes) instead of importing every
// route into an aggregator graph: a full mesh at N = 1 000 is 9 M routes,
// too many for a graph in this VM's memory, while their estimator input
// is ≈ 200 B a route. TestMeshMatchesAggregate checks that both give the
// same rows.
type meshSet struct {
	names []string // node number → address
	in    []localize.Input
	// links are the fabric's directed links by node number (src, dst),
	// with their names for the fault and noise draws.
	links []meshLink
}

type meshLink struct {
	src, dst int32
	id       graph.LinkID
}

// meshChunk is how many routes are collected per chunk before the one
// exact-size input is made.
const meshChunk = 1 << 16

// newMeshSet lists every host's distinct routes to its peers in cp, the
// hosts in fabric order and the peers in plan order, each route's ports in
// order of first port: routesOf's routes, in routesOf's order.
func newMeshSet(f *simclos.Fabric, cp clusterPlan, ports int) (*meshSet, error) {
	m := &meshSet{}
	num := newNodeNumbers()
	for _, h := range f.Hosts {
		num.add(h.Addr, &m.names)
	}
	for _, r := range f.Routers() {
		num.add(r, &m.names)
	}
	for _, l := range f.Links() {
		s, err1 := num.ofName(l.Src)
		d, err2 := num.ofName(l.Dst)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("fabric link %s→%s: unknown node", l.Src, l.Dst)
		}
		m.links = append(m.links, meshLink{s, d, l})
	}

	var (
		chunks  [][]localize.Input
		cur     = make([]localize.Input, 0, meshChunk)
		nodes   []int32
		portBuf []uint16
		paths   = make([][]netip.Addr, ports)
		groupOf = make([]int, ports)
		firsts  []int // each group's first port index, in order
	)
	for _, h := range f.Hosts {
		for _, p := range cp[h.Addr] {
			// Group the ports by hop list, as Fabric.Routes does.
			firsts = firsts[:0]
			for i := range ports {
				paths[i] = f.Path(h.Addr, p.Addr, uint16(33436+i))
				groupOf[i] = -1
				for g, j := range firsts {
					if slices.Equal(paths[j], paths[i]) {
						groupOf[i] = g
						break
					}
				}
				if groupOf[i] < 0 {
					groupOf[i] = len(firsts)
					firsts = append(firsts, i)
				}
			}
			for g, j := range firsts {
				hops := paths[j]
				if cap(nodes)-len(nodes) < len(hops) {
					// A fresh chunk, never a copy: earlier inputs alias it.
					nodes = make([]int32, 0, 1<<20)
				}
				start := len(nodes)
				for _, a := range hops {
					n, err := num.of(a)
					if err != nil {
						return nil, err
					}
					nodes = append(nodes, n)
				}
				if cap(portBuf)-len(portBuf) < ports {
					portBuf = make([]uint16, 0, 1<<20)
				}
				pstart := len(portBuf)
				for i := range ports {
					if groupOf[i] == g {
						portBuf = append(portBuf, uint16(33436+i))
					}
				}
				if len(cur) == cap(cur) {
					chunks, cur = append(chunks, cur), make([]localize.Input, 0, meshChunk)
				}
				cur = append(cur, localize.Input{
					Nodes: nodes[start:len(nodes):len(nodes)],
					Ports: portBuf[pstart:len(portBuf):len(portBuf)],
				})
			}
		}
	}
	total := len(cur)
	for _, c := range chunks {
		total += len(c)
	}
	m.in = make([]localize.Input, 0, total)
	for i, c := range chunks {
		m.in = append(m.in, c...)
		chunks[i] = nil
	}
	m.in = append(m.in, cur...)
	return m, nil
}

// draw gives every route samples pings for one trial and sets how many
// were lost (all forward), as aggregate's metricsFor draws them: a ping is
// lost unless every link on the route keeps it (its fault times its
// background loss), one rng.Float64 per ping, routes in order. The same
// rng state gives the same counts as aggregate over routesOf's routes.
func (m *meshSet) draw(lossy map[graph.LinkID]float64, noise background, samples int, rng *rand.Rand) {
	n := len(m.names)
	keep := make([]float64, n*n) // by src*n + dst; fabric links only
	for _, l := range m.links {
		keep[int(l.src)*n+int(l.dst)] = (1 - lossy[l.id]) * (1 - noise.of(l.id))
	}
	for i := range m.in {
		r := &m.in[i]
		k := 1.0
		for j := 1; j < len(r.Nodes); j++ {
			k *= keep[int(r.Nodes[j-1])*n+int(r.Nodes[j])]
		}
		lost := 0
		for range samples {
			if rng.Float64() > k {
				lost++
			}
		}
		r.Samples, r.Lost, r.LostForward = samples, lost, lost
	}
}

// rank runs the estimator the aggregator's health runs (default
// settings) on the routes' current counts.
func (m *meshSet) rank() []graph.LinkHealth {
	return localize.RunNumbered(m.names, m.in, graph.DefaultConfig().Health)
}

// bytes is what the input holds: the inputs, their hops and ports.
func (m *meshSet) bytes() uint64 {
	var b uint64
	for i := range m.in {
		b += uint64(unsafe.Sizeof(m.in[i])) + 4*uint64(len(m.in[i].Nodes)) + 2*uint64(len(m.in[i].Ports))
	}
	return b
}

// hops is how many hops the routes have in all.
func (m *meshSet) hops() int {
	n := 0
	for i := range m.in {
		n += len(m.in[i].Nodes)
	}
	return n
}

// nodeNumbers numbers simclos addresses (198.18.0.0/15) by a table, not a
// map: a full mesh at N = 1 000 looks up 6·10⁷ hops.
type nodeNumbers struct{ tab []int32 }

func newNodeNumbers() *nodeNumbers {
	t := make([]int32, 2<<16)
	for i := range t {
		t[i] = -1
	}
	return &nodeNumbers{t}
}

func (nn *nodeNumbers) slot(a netip.Addr) (int, error) {
	if !a.Is4() {
		return 0, fmt.Errorf("node %s is not IPv4", a)
	}
	b := a.As4()
	if b[0] != 198 || b[1] < 18 || b[1] > 19 {
		return 0, fmt.Errorf("node %s is outside 198.18.0.0/15", a)
	}
	return int(b[1]-18)<<16 | int(b[2])<<8 | int(b[3]), nil
}

func (nn *nodeNumbers) add(a netip.Addr, names *[]string) {
	s, err := nn.slot(a)
	if err != nil || nn.tab[s] >= 0 {
		return
	}
	nn.tab[s] = int32(len(*names))
	*names = append(*names, a.String())
}

func (nn *nodeNumbers) of(a netip.Addr) (int32, error) {
	s, err := nn.slot(a)
	if err != nil {
		return -1, err
	}
	if nn.tab[s] < 0 {
		return -1, fmt.Errorf("node %s is not in the fabric", a)
	}
	return nn.tab[s], nil
}

func (nn *nodeNumbers) ofName(name string) (int32, error) {
	a, err := netip.ParseAddr(name)
	if err != nil {
		return -1, err
	}
	return nn.of(a)
}

// sortByPath orders the routes by their router hops, then source,
// destination and first port, and returns where each route came from
// (m.in[i] was route perm[i]): the routes through one router link then sit
// in a few runs instead of one in every few hundred, and the estimator's
// sweeps over a link's routes read memory in order (1.5× less CPU for a
// full mesh at N = 600). The estimator's rows do not depend on the order of
// its input (localize.Run); the draws do: a trial drawn after sorting draws
// in the sorted order.
func (m *meshSet) sortByPath() (perm []int32) {
	perm = make([]int32, len(m.in))
	for i := range perm {
		perm[i] = int32(i)
	}
	slices.SortFunc(perm, func(i, j int32) int {
		a, b := &m.in[i], &m.in[j]
		x, y := a.Nodes, b.Nodes
		if c := slices.Compare(x[1:len(x)-1], y[1:len(y)-1]); c != 0 {
			return c
		}
		if c := cmp.Compare(x[0], y[0]); c != 0 {
			return c
		}
		if c := cmp.Compare(x[len(x)-1], y[len(y)-1]); c != 0 {
			return c
		}
		return cmp.Compare(a.Ports[0], b.Ports[0])
	})
	// m.in[i] = m.in[perm[i]], in place, a cycle at a time: a sorted copy
	// would add 1.6 GiB to the peak of a full mesh at N = 1 000.
	done := make([]bool, len(perm))
	for i := range perm {
		if done[i] {
			continue
		}
		first := m.in[i]
		j := i
		for !done[j] {
			done[j] = true
			k := int(perm[j])
			if k == i {
				m.in[j] = first
				break
			}
			m.in[j], j = m.in[k], k
		}
	}
	return perm
}
