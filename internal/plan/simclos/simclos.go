// Package simclos simulates a Clos fabric for the probe plan's property
// tests and the scale harness (scripts/scale): hosts under ToRs, two tiers
// (ToR → spine) or three (ToR → pod aggregation → spine), ECMP next hops
// picked by a hash of (router, src, dst, port) like a seeded 5-tuple hash.
// Addresses are in 198.18.0.0/15: hosts 198.18.x.y, routers 198.19.x.y.
package simclos

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/dnms/dnms/internal/graph"
)

// Host is one host: its node name, address and ToR.
type Host struct {
	Name string
	Addr netip.Addr
	Rack netip.Addr
}

// Fabric is a simulated Clos. Pods 0 is two tiers; otherwise ToRs and Aggs
// are per pod. Build it with New.
type Fabric struct {
	Pods, ToRs, Aggs, Spines, HostsPerToR int

	Hosts   []Host
	torOf   map[netip.Addr]int // host → global ToR index
	podOf   []int              // ToR → pod
	ToRAddr []netip.Addr
	AggAddr [][]netip.Addr // pod → aggs
	Spine   []netip.Addr
	links   map[graph.LinkID]bool
}

func addr(a, b, c int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, byte(18 + a), byte(b), byte(c)})
}

// New builds the fabric f describes.
func New(f Fabric) *Fabric {
	pods := max(f.Pods, 1)
	f.torOf = make(map[netip.Addr]int)
	f.links = make(map[graph.LinkID]bool)
	link := func(a, b netip.Addr) {
		f.links[graph.LinkID{Src: a.String(), Dst: b.String()}] = true
		f.links[graph.LinkID{Src: b.String(), Dst: a.String()}] = true
	}
	for s := 0; s < f.Spines; s++ {
		f.Spine = append(f.Spine, addr(1, 250, s+1))
	}
	for p := 0; p < pods; p++ {
		var aggs []netip.Addr
		for a := 0; f.Pods > 0 && a < f.Aggs; a++ {
			aggs = append(aggs, addr(1, 200+p/50, (p%50)*5+a+1))
			for _, s := range f.Spine {
				link(aggs[a], s)
			}
		}
		f.AggAddr = append(f.AggAddr, aggs)
		for t := 0; t < f.ToRs; t++ {
			tor := len(f.ToRAddr)
			ta := addr(1, tor/250, tor%250+1)
			f.ToRAddr = append(f.ToRAddr, ta)
			f.podOf = append(f.podOf, p)
			up := f.Spine
			if f.Pods > 0 {
				up = aggs
			}
			for _, u := range up {
				link(ta, u)
			}
			for h := 0; h < f.HostsPerToR; h++ {
				n := len(f.Hosts)
				ha := addr(0, n/250, n%250+1)
				f.Hosts = append(f.Hosts, Host{Name: fmt.Sprintf("h%d", n), Addr: ha, Rack: ta})
				f.torOf[ha] = tor
				link(ha, ta)
			}
		}
	}
	return &f
}

func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func ecmp(router, src, dst netip.Addr, port uint16, next []netip.Addr) netip.Addr {
	r, s, d := router.As4(), src.As4(), dst.As4()
	h := mix(uint64(r[1])<<16 | uint64(r[2])<<8 | uint64(r[3]))
	h = mix(h ^ uint64(s[1])<<40 ^ uint64(s[2])<<32 ^ uint64(s[3])<<24 ^ uint64(d[1])<<16 ^ uint64(d[2])<<8 ^ uint64(d[3]))
	h = mix(h ^ uint64(port))
	return next[h%uint64(len(next))]
}

// Path returns the hops of the flow src → dst from port, endpoints
// included.
func (f *Fabric) Path(src, dst netip.Addr, port uint16) []netip.Addr {
	ts, td := f.torOf[src], f.torOf[dst]
	hops := []netip.Addr{src, f.ToRAddr[ts]}
	if ts != td {
		if f.Pods == 0 {
			hops = append(hops, ecmp(f.ToRAddr[ts], src, dst, port, f.Spine))
		} else {
			ps, pd := f.podOf[ts], f.podOf[td]
			a := ecmp(f.ToRAddr[ts], src, dst, port, f.AggAddr[ps])
			hops = append(hops, a)
			if ps != pd {
				s := ecmp(a, src, dst, port, f.Spine)
				hops = append(hops, s, ecmp(s, src, dst, port, f.AggAddr[pd]))
			}
		}
		hops = append(hops, f.ToRAddr[td])
	}
	return append(hops, dst)
}

// Route is Path as graph node ids.
func (f *Fabric) Route(src, dst netip.Addr, port uint16) []string {
	p := f.Path(src, dst, port)
	out := make([]string, len(p))
	for i, h := range p {
		out[i] = h.String()
	}
	return out
}

// Links returns every directed link of the fabric, sorted.
func (f *Fabric) Links() []graph.LinkID {
	out := make([]graph.LinkID, 0, len(f.links))
	for l := range f.links {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b graph.LinkID) int { return cmp.Or(cmp.Compare(a.Src, b.Src), cmp.Compare(a.Dst, b.Dst)) })
	return out
}

// Routers returns every router address.
// PortGroup is the source ports from one host to another that take the
// same hop list (one route).
type PortGroup struct {
	Hops  []string
	Ports []uint16
}

// Routes groups the ports 33436 … 33436+ports-1 from src to dst by their hop
// list, in order of first port.
func (f *Fabric) Routes(src, dst netip.Addr, ports int) []PortGroup {
	var out []PortGroup
	byID := make(map[string]int)
	for i := 0; i < ports; i++ {
		port := uint16(33436 + i)
		hops := f.Route(src, dst, port)
		id := graph.RouteID(hops)
		if j, ok := byID[id]; ok {
			out[j].Ports = append(out[j].Ports, port)
			continue
		}
		byID[id] = len(out)
		out = append(out, PortGroup{Hops: hops, Ports: []uint16{port}})
	}
	return out
}

func (f *Fabric) Routers() []netip.Addr {
	out := slices.Clone(f.ToRAddr)
	for _, a := range f.AggAddr {
		out = append(out, a...)
	}
	return append(out, f.Spine...)
}
