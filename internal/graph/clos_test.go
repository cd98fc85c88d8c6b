package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// closSim generates route sets over a synthetic leaf-spine (Clos) fabric with
// known per-link loss, for the health tests and the localization benchmark.
// Hosts are 198.18.<leaf>.<host+1>, leaves 198.19.0.<leaf+1>, spines
// 198.19.1.<spine+1>; every link is directed. Each host pings Peers random
// peers (and is pinged back: pairs are symmetric, so every key's reverse key
// exists, as on the aggregator) from Ports source ports; ECMP picks the spine
// by a hash of (src, dst, port), different for the two directions like a real
// 5-tuple hash. Each key carries Samples probes; a probe is lost forward with
// the forward path's loss, and, if it reached the reflector, its ack is lost
// with the reverse path's loss (the route of the reverse key).
type closSim struct {
	Spines, Leaves, HostsPerLeaf int
	Peers, Ports, Samples        int
	// NoiseMax: every link gets a background loss drawn uniformly from
	// [0, NoiseMax].
	NoiseMax float64
	// UnknownFrac of the lost probes lose their direction (LossUnknown).
	UnknownFrac float64
}

type closFabric struct {
	sim   closSim
	hosts []string
	leaf  []string
	spine []string
	links []LinkID
	keys  []RouteKey
}

func (c closSim) build(rng *rand.Rand) *closFabric {
	f := &closFabric{sim: c}
	for l := 0; l < c.Leaves; l++ {
		f.leaf = append(f.leaf, fmt.Sprintf("198.19.%d.%d", l/250, l%250+1))
		for h := 0; h < c.HostsPerLeaf; h++ {
			f.hosts = append(f.hosts, fmt.Sprintf("198.18.%d.%d", l, h+1))
		}
	}
	for s := 0; s < c.Spines; s++ {
		f.spine = append(f.spine, fmt.Sprintf("198.19.%d.%d", 100+s/250, s%250+1))
	}
	for l := range f.leaf {
		for h := 0; h < c.HostsPerLeaf; h++ {
			host := f.hosts[l*c.HostsPerLeaf+h]
			f.links = append(f.links, LinkID{host, f.leaf[l]}, LinkID{f.leaf[l], host})
		}
		for _, s := range f.spine {
			f.links = append(f.links, LinkID{f.leaf[l], s}, LinkID{s, f.leaf[l]})
		}
	}
	// Symmetric random peer pairs.
	n := len(f.hosts)
	pairs := make(map[[2]int]bool)
	for a := 0; a < n; a++ {
		for i := 0; i < c.Peers; i++ {
			b := rng.IntN(n - 1)
			if b >= a {
				b++
			}
			pairs[[2]int{min(a, b), max(a, b)}] = true
		}
	}
	sorted := make([][2]int, 0, len(pairs))
	for p := range pairs {
		sorted = append(sorted, p)
	}
	slices.SortFunc(sorted, func(a, b [2]int) int {
		if a[0] != b[0] {
			return a[0] - b[0]
		}
		return a[1] - b[1]
	})
	for _, p := range sorted {
		for port := 0; port < c.Ports; port++ {
			sp := uint16(33500 + port)
			a, b := netip.MustParseAddr(f.hosts[p[0]]), netip.MustParseAddr(f.hosts[p[1]])
			f.keys = append(f.keys, RouteKey{a, b, sp}, RouteKey{b, a, sp})
		}
	}
	return f
}

func (f *closFabric) hostIndex(a netip.Addr) int {
	b := a.As4()
	return int(b[2])*f.sim.HostsPerLeaf + int(b[3]) - 1
}

// path is the hop list of key under ECMP.
func (f *closFabric) path(k RouteKey) []string {
	a, b := f.hostIndex(k.Src), f.hostIndex(k.Dst)
	la, lb := a/f.sim.HostsPerLeaf, b/f.sim.HostsPerLeaf
	if la == lb {
		return []string{f.hosts[a], f.leaf[la], f.hosts[b]}
	}
	h := uint64(a)*0x9E3779B97F4A7C15 ^ uint64(b)*0xC2B2AE3D27D4EB4F ^ uint64(k.SrcPort)*0x165667B19E3779F9
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 32
	s := int(h % uint64(f.sim.Spines))
	return []string{f.hosts[a], f.leaf[la], f.spine[s], f.leaf[lb], f.hosts[b]}
}

// noise draws the background loss of every link.
func (f *closFabric) noise(rng *rand.Rand) map[LinkID]float64 {
	loss := make(map[LinkID]float64, len(f.links))
	for _, l := range f.links {
		loss[l] = rng.Float64() * f.sim.NoiseMax
	}
	return loss
}

func success(hops []string, loss map[LinkID]float64) float64 {
	s := 1.0
	for i := 1; i < len(hops); i++ {
		s *= 1 - loss[LinkID{hops[i-1], hops[i]}]
	}
	return s
}

// routes simulates probing with the given per-link loss and returns the route
// set (keys with the same path merged into one route).
func (f *closFabric) routes(rng *rand.Rand, loss map[LinkID]float64) []Route {
	byID := make(map[string]*Route)
	var order []string
	for _, k := range f.keys {
		fwd := f.path(k)
		rev := f.path(k.Reverse())
		n := f.sim.Samples
		lf := binomial(rng, n, 1-success(fwd, loss))
		lr := binomial(rng, n-lf, 1-success(rev, loss))
		uf := binomial(rng, lf, f.sim.UnknownFrac)
		ur := binomial(rng, lr, f.sim.UnknownFrac)
		id := RouteID(fwd)
		r := byID[id]
		if r == nil {
			r = &Route{ID: id, Src: k.Src, Dst: k.Dst, Hops: fwd}
			byID[id] = r
			order = append(order, id)
		}
		r.Keys = append(r.Keys, k)
		m := &r.Metrics
		m.Samples += n
		m.Lost += lf + lr
		m.LostForward += lf - uf
		m.LostReverse += lr - ur
		// RTT excess over the baseline: a few µs of noise per key.
		m.RTTExcessByKey = append(m.RTTExcessByKey, rng.ExpFloat64()*3e-6)
	}
	out := make([]Route, 0, len(order))
	for _, id := range order {
		r := byID[id]
		m := &r.Metrics
		m.Loss = float64(m.Lost) / float64(m.Samples)
		m.LossForward = float64(m.LostForward) / float64(m.Samples)
		m.LossReverse = float64(m.LostReverse) / float64(m.Samples)
		out = append(out, *r)
	}
	return out
}

// binomial draws Binomial(n, p) by geometric skips (O(np)).
func binomial(rng *rand.Rand, n int, p float64) int {
	switch {
	case n <= 0 || p <= 0:
		return 0
	case p >= 1:
		return n
	case p > 0.5:
		return n - binomial(rng, n, 1-p)
	}
	lq := math.Log1p(-p)
	k, i := 0, 0
	for {
		u := 1 - rng.Float64() // (0, 1]
		i += int(math.Floor(math.Log(u)/lq)) + 1
		if i > n {
			return k
		}
		k++
	}
}

// snapshotOf builds a consistent snapshot (nodes, links, routes).
func snapshotOf(routes []Route) Snapshot {
	g := New(DefaultConfig())
	for _, r := range routes {
		g.ImportRoute("sim", r)
	}
	return g.Snapshot()
}

func TestBinomialMean(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, p := range []float64{0.001, 0.05, 0.3, 0.9} {
		sum := 0
		const trials, n = 2000, 100
		for i := 0; i < trials; i++ {
			sum += binomial(rng, n, p)
		}
		mean := float64(sum) / trials
		if want := n * p; math.Abs(mean-want) > 4*math.Sqrt(n*p*(1-p)/trials)+0.01 {
			t.Errorf("binomial(%d, %v) mean %.3f, want %.3f", n, p, mean, want)
		}
	}
}
