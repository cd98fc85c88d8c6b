package plan

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/dnms/dnms/internal/graph"
)

// fabric is a simulated Clos for the plan's property tests: hosts under
// ToRs; two tiers (ToR → spine) when Pods is 0, three (ToR → pod
// aggregation → spine) otherwise. ECMP picks each next hop by a hash of
// (router, src, dst, port), like a 5-tuple hash with a per-router seed.
type fabric struct {
	Pods, ToRs, Aggs, Spines, Hosts int // ToRs and Aggs are per pod when Pods > 0

	hosts   []Member
	torOf   map[netip.Addr]int // host → global ToR index
	podOf   []int              // ToR → pod
	torAddr []netip.Addr
	aggAddr [][]netip.Addr // pod → aggs
	spine   []netip.Addr
	links   map[graph.LinkID]bool
}

func addr(a, b, c int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, byte(18 + a), byte(b), byte(c)})
}

func (f *fabric) build() *fabric {
	pods := max(f.Pods, 1)
	f.torOf = make(map[netip.Addr]int)
	f.links = make(map[graph.LinkID]bool)
	link := func(a, b netip.Addr) {
		f.links[graph.LinkID{Src: a.String(), Dst: b.String()}] = true
		f.links[graph.LinkID{Src: b.String(), Dst: a.String()}] = true
	}
	for s := 0; s < f.Spines; s++ {
		f.spine = append(f.spine, addr(1, 250, s+1))
	}
	for p := 0; p < pods; p++ {
		var aggs []netip.Addr
		for a := 0; f.Pods > 0 && a < f.Aggs; a++ {
			aggs = append(aggs, addr(1, 200+p, a+1))
			for _, s := range f.spine {
				link(aggs[a], s)
			}
		}
		f.aggAddr = append(f.aggAddr, aggs)
		for t := 0; t < f.ToRs; t++ {
			tor := len(f.torAddr)
			ta := addr(1, tor/250, tor%250+1)
			f.torAddr = append(f.torAddr, ta)
			f.podOf = append(f.podOf, p)
			up := f.spine
			if f.Pods > 0 {
				up = aggs
			}
			for _, u := range up {
				link(ta, u)
			}
			for h := 0; h < f.Hosts; h++ {
				n := len(f.hosts)
				ha := addr(0, n/250, n%250+1)
				f.hosts = append(f.hosts, Member{Name: fmt.Sprintf("h%d", n), Addr: ha, Rack: ta})
				f.torOf[ha] = tor
				link(ha, ta)
			}
		}
	}
	return f
}

func ecmp(router netip.Addr, src, dst netip.Addr, port uint16, next []netip.Addr) netip.Addr {
	r, s, d := router.As4(), src.As4(), dst.As4()
	h := mix(uint64(r[2])<<8 | uint64(r[3]) | uint64(r[1])<<16)
	h = mix(h ^ uint64(s[1])<<40 ^ uint64(s[2])<<32 ^ uint64(s[3])<<24 ^ uint64(d[1])<<16 ^ uint64(d[2])<<8 ^ uint64(d[3]))
	h = mix(h ^ uint64(port))
	return next[h%uint64(len(next))]
}

// route is the hop list of the flow src → dst from port.
func (f *fabric) route(src, dst netip.Addr, port uint16) []string {
	ts, td := f.torOf[src], f.torOf[dst]
	hops := []netip.Addr{src, f.torAddr[ts]}
	if ts != td {
		if f.Pods == 0 {
			hops = append(hops, ecmp(f.torAddr[ts], src, dst, port, f.spine))
		} else {
			ps, pd := f.podOf[ts], f.podOf[td]
			a := ecmp(f.torAddr[ts], src, dst, port, f.aggAddr[ps])
			hops = append(hops, a)
			if ps != pd {
				s := ecmp(a, src, dst, port, f.spine)
				hops = append(hops, s, ecmp(s, src, dst, port, f.aggAddr[pd]))
			}
		}
		hops = append(hops, f.torAddr[td])
	}
	hops = append(hops, dst)
	out := make([]string, len(hops))
	for i, h := range hops {
		out[i] = h.String()
	}
	return out
}

// coverage returns the link coverage of the distinct routes every host's
// plan traces over ports source ports.
func (f *fabric) coverage(ports int, plans func(self Member) []Pick) map[graph.LinkID]Coverage {
	var t tally
	for _, h := range f.hosts {
		seen := make(map[string]bool)
		for _, p := range plans(h) {
			for port := 0; port < ports; port++ {
				hops := f.route(h.Addr, p.Addr, uint16(33436+port))
				id := graph.RouteID(hops)
				if !seen[id] {
					seen[id] = true
					t.add(h.Addr, hops)
				}
			}
		}
	}
	return t.coverage()
}

func (f *fabric) sortedLinks() []graph.LinkID {
	out := make([]graph.LinkID, 0, len(f.links))
	for l := range f.links {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b graph.LinkID) int {
		if a.Src != b.Src {
			if a.Src < b.Src {
				return -1
			}
			return 1
		}
		if a.Dst < b.Dst {
			return -1
		}
		if a.Dst > b.Dst {
			return 1
		}
		return 0
	})
	return out
}
