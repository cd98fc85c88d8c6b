package localize

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// A scenario generator that does not share the estimator's model: probes
// are simulated one by one over the path they really take, which need not
// be the hop list the route reports (route changes mid-window, ECMP paths
// the mapper has not seen); routers can drop on all their links at once;
// silent hops, missing reverse routes, vanished agents and losses of
// unknown direction are all possible; RTTs carry the measured error of each
// time source (README "Measured"), and a route's baseline is the 10th
// percentile of an earlier healthy window, as the graph keeps it.

type link = [2]string

type fabric struct {
	spines, leaves, hpl int
	hosts, leaf, spine  []string
}

func newFabric(spines, leaves, hpl int) *fabric {
	f := &fabric{spines: spines, leaves: leaves, hpl: hpl}
	for l := 0; l < leaves; l++ {
		f.leaf = append(f.leaf, fmt.Sprintf("198.19.0.%d", l+1))
		for h := 0; h < hpl; h++ {
			f.hosts = append(f.hosts, fmt.Sprintf("198.18.%d.%d", l, h+1))
		}
	}
	for s := 0; s < spines; s++ {
		f.spine = append(f.spine, fmt.Sprintf("198.19.1.%d", s+1))
	}
	return f
}

// links lists the leaf–spine links (both directions) and host links.
func (f *fabric) links() (fabricLinks, hostLinks []link) {
	for l, lf := range f.leaf {
		for _, s := range f.spine {
			fabricLinks = append(fabricLinks, link{lf, s}, link{s, lf})
		}
		for h := 0; h < f.hpl; h++ {
			host := f.hosts[l*f.hpl+h]
			hostLinks = append(hostLinks, link{host, lf}, link{lf, host})
		}
	}
	return fabricLinks, hostLinks
}

// path is the ECMP path of flow (a, b, port); salt picks another hash
// (another routing epoch or hash seed).
func (f *fabric) path(a, b int, port uint16, salt uint64) []string {
	la, lb := a/f.hpl, b/f.hpl
	if la == lb {
		return []string{f.hosts[a], f.leaf[la], f.hosts[b]}
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%d|%d|%d", a, b, port, salt)
	s := int(h.Sum64() % uint64(f.spines))
	return []string{f.hosts[a], f.leaf[la], f.spine[s], f.leaf[lb], f.hosts[b]}
}

// world is the ground truth.
type world struct {
	loss       map[link]float64
	routerLoss map[string]float64 // drops on every link out of the router
	delay      map[link]float64   // one-way seconds
	source     timeSource
}

// timeSource models a source's per-sample RTT error: |N(0, sigma)| plus,
// with probability tailP, an exponential tail of mean tail (README
// "Measured": p50 and p99 of each source against a capture).
type timeSource struct {
	name               string
	sigma, tail, tailP float64
	// jitter, when set, replaces the queueing model and the error above:
	// 101 quantiles of RTT jitter measured in the lab (labjitter_test.go).
	jitter []float64
}

var (
	srcEBPF   = timeSource{name: "ebpf", sigma: 0.4e-6, tail: 3e-6, tailP: 0.01}
	srcKernel = timeSource{name: "kernel", sigma: 0.6e-6, tail: 3.5e-6, tailP: 0.01}
	srcUser   = timeSource{name: "user", sigma: 15e-6, tail: 150e-6, tailP: 0.02}
)

func (w *world) success(p []string) float64 {
	s := 1.0
	for i := 1; i < len(p); i++ {
		s *= (1 - w.loss[link{p[i-1], p[i]}]) * (1 - w.routerLoss[p[i-1]])
	}
	return s
}

func (w *world) pathDelay(p []string) float64 {
	d := 0.0
	for i := 1; i < len(p); i++ {
		d += w.delay[link{p[i-1], p[i]}]
	}
	return d
}

// rtt draws one RTT over a round trip of hops links adding delay: 20 µs
// per hop of base, exponential queueing of mean 2 µs per hop, the world's
// link delays, and the source's error.
func (w *world) rtt(rng *rand.Rand, hops int, delay float64) float64 {
	if q := w.source.jitter; q != nil {
		return 20e-6*float64(hops) + delay + drawQuantile(rng, q)
	}
	v := 20e-6*float64(hops) + rng.ExpFloat64()*2e-6*float64(hops) + delay
	v += math.Abs(rng.NormFloat64()) * w.source.sigma
	if rng.Float64() < w.source.tailP {
		v += rng.ExpFloat64() * w.source.tail
	}
	return v
}

// hazards are what real route sets look like besides faults.
type hazards struct {
	peers, ports, samples int
	noiseMax              float64 // background loss per link, uniform [0, noiseMax]
	unknownFrac           float64 // lost probes whose direction is unknown
	missingRoute          float64 // routes left out of the set (their reverses lose acks' attribution)
	silentHop             float64 // router hops that do not answer traces
	changed               float64 // keys whose path changed mid-window
	unseen                float64 // keys whose probes take a path other than the mapped one
	vanished              int     // agents gone: their routes gone, probes to them all lost
}

var defaultHazards = hazards{peers: 12, ports: 4, samples: 100, noiseMax: 1e-4, unknownFrac: 0.1}

type simRoute struct {
	in Input
}

// generate simulates one window of probing and returns the route set.
func (f *fabric) generate(rng *rand.Rand, w *world, hz hazards) []Input {
	n := len(f.hosts)
	gone := map[int]bool{}
	for len(gone) < hz.vanished {
		gone[rng.IntN(n)] = true
	}
	routes := map[string]*simRoute{}
	var order []string
	for a := 0; a < n; a++ {
		if gone[a] {
			continue
		}
		for _, b := range rng.Perm(n)[:hz.peers+1] {
			if b == a {
				continue
			}
			for port := uint16(1); port <= uint16(hz.ports); port++ {
				id, r := f.probeKey(rng, w, hz, a, b, port, gone[b])
				if routes[id] == nil {
					routes[id] = r
					order = append(order, id)
				} else {
					merge(routes[id], r)
				}
			}
		}
	}
	var out []Input
	for _, id := range order {
		if rng.Float64() < hz.missingRoute {
			continue
		}
		out = append(out, routes[id].in)
	}
	return out
}

// probeKey simulates hz.samples probes of one key and returns its route.
func (f *fabric) probeKey(rng *rand.Rand, w *world, hz hazards, a, b int, port uint16, dead bool) (string, *simRoute) {
	mapped := f.path(a, b, port, 0)
	now := mapped
	before := mapped
	if rng.Float64() < hz.changed {
		before = f.path(a, b, port, 1)
	}
	if rng.Float64() < hz.unseen {
		now = f.path(a, b, port, 2)
		before = now
	}
	rev := f.path(b, a, port, 0)
	hops := len(mapped) + len(rev) - 2
	okRev := w.success(rev)
	r := &simRoute{in: Input{Ports: []uint16{port}, Samples: hz.samples}}
	var rtts, base []float64
	okNow, okBefore := w.success(now), w.success(before)
	dRev := w.pathDelay(rev)
	dNow, dBefore := w.pathDelay(now)+dRev, w.pathDelay(before)+dRev
	for i := 0; i < hz.samples; i++ {
		ok, d := okNow, dNow
		if i < hz.samples/2 {
			ok, d = okBefore, dBefore
		}
		lostF := dead || rng.Float64() >= ok
		lostR := !lostF && rng.Float64() >= okRev
		switch {
		case lostF || lostR:
			r.in.Lost++
			if dead || rng.Float64() < hz.unknownFrac {
				break
			}
			if lostF {
				r.in.LostForward++
			} else {
				r.in.LostReverse++
			}
		default:
			rtts = append(rtts, w.rtt(rng, hops, d))
		}
		base = append(base, w.rtt(rng, hops, 0))
	}
	r.in.Excess = []float64{excess(rtts, base)}
	return f.name(rng, hz, mapped, r)
}

// name gives r the reported hop list of mapped, with silent hops.
func (f *fabric) name(rng *rand.Rand, hz hazards, mapped []string, r *simRoute) (string, *simRoute) {
	hops := slices.Clone(mapped)
	for i := 1; i < len(hops)-1; i++ {
		if rng.Float64() < hz.silentHop {
			hops[i] = "*"
		}
	}
	id := strings.Join(hops, "|")
	for i, h := range hops {
		if h == "*" {
			hops[i] = fmt.Sprintf("*%s/%d", id, i)
		}
	}
	r.in.Hops = hops
	return id, r
}

func merge(dst, src *simRoute) {
	dst.in.Ports = append(dst.in.Ports, src.in.Ports...)
	dst.in.Samples += src.in.Samples
	dst.in.Lost += src.in.Lost
	dst.in.LostForward += src.in.LostForward
	dst.in.LostReverse += src.in.LostReverse
	dst.in.Excess = append(dst.in.Excess, src.in.Excess...)
}

// excess is what the graph reports for a key: ring p50 minus the baseline
// window's 10th percentile (NaN without RTTs).
func excess(rtts, base []float64) float64 {
	if len(rtts) == 0 {
		return math.NaN()
	}
	slices.Sort(rtts)
	slices.Sort(base)
	p := func(v []float64, q float64) float64 {
		return v[max(0, min(int(math.Ceil(q*float64(len(v))))-1, len(v)-1))]
	}
	return p(rtts, 0.5) - p(base, 0.1)
}

// noise draws the background loss of every link.
func (f *fabric) noise(rng *rand.Rand, max float64) map[link]float64 {
	fl, hl := f.links()
	m := map[link]float64{}
	for _, l := range append(fl, hl...) {
		m[l] = rng.Float64() * max
	}
	return m
}

// score compares the links with verdict v against the truth.
func score(rows []Row, v Verdict, truth map[link]bool) (tp, fp, fn int, flagged []link) {
	seen := map[link]bool{}
	for _, r := range rows {
		if r.Verdict == v {
			l := link{r.Src, r.Dst}
			flagged = append(flagged, l)
			seen[l] = true
			if truth[l] {
				tp++
			} else {
				fp++
			}
		}
	}
	for l := range truth {
		if !seen[l] {
			fn++
		}
	}
	return tp, fp, fn, flagged
}
