package lab

import (
	"fmt"
	"slices"
	"strings"
)

// sysctl is one /proc/sys/net write inside a namespace.
type sysctl struct{ Key, Value string }

// nsSetup is everything one namespace needs after its veths exist. It is
// pure data so that tests can check it without root.
type nsSetup struct {
	NS      string
	Ifaces  []string // veths in this namespace
	Sysctls []sysctl
	Addrs   []string // `ip -batch` lines: links up, addresses
	Routes  []string // `ip -batch` lines: routes (replace, so they can be re-applied)
}

// hashSeed gives each router its own fib_multipath_hash_seed, so that
// ECMP decisions at successive routers are independent (one seed everywhere
// polarises: every router would pick the same branch index for a flow).
func hashSeed(idx int) uint32 { return 0x9e3779b1*uint32(idx+1) + 12345 }

func (t *topology) vethCommands() []string {
	var out []string
	for _, l := range t.Links {
		out = append(out, fmt.Sprintf("link add %s netns %s type veth peer name %s netns %s",
			l.A.Ifname, l.A.NS, l.B.Ifname, l.B.NS))
	}
	return out
}

func (t *topology) setups() []nsSetup {
	var out []nsSetup
	for idx, r := range t.Routers {
		s := nsSetup{NS: r.NS}
		s.Ifaces = t.ifacesOf(r.Name)
		s.Sysctls = append(commonSysctls(s.Ifaces),
			sysctl{"net/ipv4/ip_forward", "1"},
			sysctl{"net/ipv4/fib_multipath_hash_policy", "3"},
			// src ip, dst ip, ip proto, src port, dst port
			sysctl{"net/ipv4/fib_multipath_hash_fields", "55"},
			sysctl{"net/ipv4/fib_multipath_hash_seed", fmt.Sprint(hashSeed(idx))},
		)
		s.Addrs = append(s.Addrs, "link set dev lo up", fmt.Sprintf("address add %s/32 dev lo", r.Loopback))
		for _, ifn := range s.Ifaces {
			s.Addrs = append(s.Addrs, fmt.Sprintf("link set dev %s up", ifn))
		}
		lo := r.Loopback
		switch r.Role {
		case RoleSpine:
			for _, l := range t.Links {
				if l.B.Node != r.Name {
					continue
				}
				s.Addrs = append(s.Addrs, fmt.Sprintf("address add %s/31 dev %s", l.B.Addr, l.B.Ifname))
				leaf, _ := t.router(l.A.Node)
				j := leafIndex(leaf.Name)
				s.Routes = append(s.Routes,
					fmt.Sprintf("route replace %s via %s dev %s src %s", hostSubnet(j), l.A.Addr, l.B.Ifname, lo),
					fmt.Sprintf("route replace %s/32 via %s dev %s src %s", leaf.Loopback, l.A.Addr, l.B.Ifname, lo),
				)
			}
			s.Routes = append(s.Routes, t.spineDualRoutes(r)...)
		case RoleLeaf:

			var uplinks []Link
			for _, l := range t.Links {
				switch {
				case l.B.Node == r.Name: // host port
					s.Addrs = append(s.Addrs, fmt.Sprintf("address add %s/32 dev %s", l.B.Addr, l.B.Ifname))
					s.Routes = append(s.Routes, fmt.Sprintf("route replace %s/32 dev %s scope link src %s", l.A.Addr, l.B.Ifname, lo))
				case l.A.Node == r.Name: // spine uplink
					uplinks = append(uplinks, l)
					s.Addrs = append(s.Addrs, fmt.Sprintf("address add %s/31 dev %s", l.A.Addr, l.A.Ifname))
					spine, _ := t.router(l.B.Node)
					s.Routes = append(s.Routes, fmt.Sprintf("route replace %s/32 via %s dev %s src %s", spine.Loopback, l.B.Addr, l.A.Ifname, lo))
				}
			}
			var nh strings.Builder
			for _, l := range uplinks {
				fmt.Fprintf(&nh, " nexthop via %s dev %s", l.B.Addr, l.A.Ifname)
			}
			for _, other := range t.Routers {
				if other.Role != RoleLeaf || other.Name == r.Name {
					continue
				}
				k := leafIndex(other.Name)
				s.Routes = append(s.Routes,
					fmt.Sprintf("route replace %s src %s%s", hostSubnet(k), lo, nh.String()),
					fmt.Sprintf("route replace %s/32 src %s%s", other.Loopback, lo, nh.String()),
				)
			}
			for _, h := range t.Hosts {
				if len(h.Leaves) > 0 && !slices.Contains(h.Leaves, r.Name) {
					s.Routes = append(s.Routes, fmt.Sprintf("route replace %s/32 src %s%s", h.Addr, lo, nh.String()))
				}
			}

		}
		out = append(out, s)
	}
	for _, h := range t.Hosts {
		if len(h.Leaves) > 0 {
			out = append(out, t.dualSetup(h))
			continue
		}
		s := nsSetup{NS: h.NS, Ifaces: []string{h.Ifname}}
		s.Sysctls = commonSysctls(s.Ifaces)
		gw := leafGateway(leafIndex(h.Leaf))
		s.Addrs = append(s.Addrs,
			"link set dev lo up",
			fmt.Sprintf("link set dev %s up", h.Ifname),
			fmt.Sprintf("address add %s/32 dev %s", h.Addr, h.Ifname),
		)
		s.Routes = append(s.Routes,
			fmt.Sprintf("route replace %s/32 dev %s scope link src %s", gw, h.Ifname, h.Addr),
			fmt.Sprintf("route replace default via %s dev %s src %s", gw, h.Ifname, h.Addr),
		)
		out = append(out, s)
	}
	return out
}

// spineDualRoutes reach each dual-homed host through both of its leaves
// (ECMP on the spine).
func (t *topology) spineDualRoutes(spine Router) []string {
	var out []string
	for _, h := range t.Hosts {
		if len(h.Leaves) == 0 {
			continue
		}
		var nh strings.Builder
		for _, l := range t.Links {
			if l.B.Node == spine.Name && slices.Contains(h.Leaves, l.A.Node) {
				fmt.Fprintf(&nh, " nexthop via %s dev %s", l.A.Addr, l.B.Ifname)
			}
		}
		out = append(out, fmt.Sprintf("route replace %s/32 src %s%s", h.Addr, spine.Loopback, nh.String()))
	}
	return out
}

// dualRoutes are the routers' routes to dual-homed host h when only the
// leaves in up still reach it: what a routing protocol would converge to
// when the host (announcing its lo address to each leaf it is wired to)
// loses an uplink. A leaf that lost its link reaches h through the spines,
// and spines reach h only through the leaves in up. Lines per namespace,
// for `ip -batch`.
func (t *topology) dualRoutes(h Host, up map[string]bool) map[string][]string {
	out := map[string][]string{}
	anyUp := len(up) > 0
	for _, r := range t.Routers {
		var nh strings.Builder
		for _, l := range t.Links {
			switch {
			case r.Role == RoleSpine && l.B.Node == r.Name && up[l.A.Node]:
				fmt.Fprintf(&nh, " nexthop via %s dev %s", l.A.Addr, l.B.Ifname)
			case r.Role == RoleLeaf && l.A.Node == r.Name && strings.HasPrefix(l.B.Node, "spine"):
				fmt.Fprintf(&nh, " nexthop via %s dev %s", l.B.Addr, l.A.Ifname)
			}
		}
		switch {
		case r.Role == RoleLeaf && up[r.Name]:
			for _, l := range t.Links {
				if l.A.Node == h.Name && l.B.Node == r.Name {
					out[r.NS] = append(out[r.NS], fmt.Sprintf("route replace %s/32 dev %s scope link src %s", h.Addr, l.B.Ifname, r.Loopback))
				}
			}
		case anyUp && nh.Len() > 0:
			out[r.NS] = append(out[r.NS], fmt.Sprintf("route replace %s/32 src %s%s", h.Addr, r.Loopback, nh.String()))
		default:
			out[r.NS] = append(out[r.NS], fmt.Sprintf("route del %s/32", h.Addr))
		}
	}
	return out
}

// dualSetup wires a dual-homed host: its address on lo, eth0 and eth1
// unnumbered towards its two leaves' gateways, and an ECMP default route
// over both, hashed on the 5-tuple like a host with L4 hashing.
func (t *topology) dualSetup(h Host) nsSetup {
	var ups []Link
	for _, l := range t.Links {
		if l.A.Node == h.Name {
			ups = append(ups, l)
		}
	}
	s := nsSetup{NS: h.NS}
	for _, l := range ups {
		s.Ifaces = append(s.Ifaces, l.A.Ifname)
	}
	s.Sysctls = append(commonSysctls(s.Ifaces), sysctl{"net/ipv4/fib_multipath_hash_policy", "1"})
	s.Addrs = append(s.Addrs, "link set dev lo up", fmt.Sprintf("address add %s/32 dev lo", h.Addr))
	var nh strings.Builder
	for _, l := range ups {
		s.Addrs = append(s.Addrs, fmt.Sprintf("link set dev %s up", l.A.Ifname))
		s.Routes = append(s.Routes, fmt.Sprintf("route replace %s/32 dev %s scope link src %s", l.B.Addr, l.A.Ifname, h.Addr))
		fmt.Fprintf(&nh, " nexthop via %s dev %s", l.B.Addr, l.A.Ifname)
	}
	s.Routes = append(s.Routes, fmt.Sprintf("route replace default src %s%s", h.Addr, nh.String()))
	return s
}

// commonSysctls apply to routers and hosts: no ICMP rate limit (traceroute
// and port-unreachable replies must never be suppressed), no reverse-path
// filter (ECMP makes paths asymmetric), ICMP errors sourced by route rather
// than by ingress interface, and no IPv6 on the veths (no ND/MLD chatter in
// captures; the lab is IPv4).
func commonSysctls(ifaces []string) []sysctl {
	s := []sysctl{
		{"net/ipv4/icmp_ratelimit", "0"},
		{"net/ipv4/icmp_ratemask", "0"},
		{"net/ipv4/icmp_errors_use_inbound_ifaddr", "0"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv4/conf/lo/rp_filter", "0"},
	}
	for _, ifn := range ifaces {
		s = append(s,
			sysctl{"net/ipv4/conf/" + ifn + "/rp_filter", "0"},
			sysctl{"net/ipv6/conf/" + ifn + "/disable_ipv6", "1"},
		)
	}
	return s
}

func (t *topology) ifacesOf(node string) []string {
	var out []string
	for _, l := range t.Links {
		if l.A.Node == node {
			out = append(out, l.A.Ifname)
		}
		if l.B.Node == node {
			out = append(out, l.B.Ifname)
		}
	}
	return out
}

func leafIndex(name string) int {
	var j int
	fmt.Sscanf(name, "leaf%d", &j)
	return j
}

// endpointOf returns the end of l on node, and the other end.
func endpointOf(l Link, node string) (near, far Endpoint, ok bool) {
	switch node {
	case l.A.Node:
		return l.A, l.B, true
	case l.B.Node:
		return l.B, l.A, true
	}
	return Endpoint{}, Endpoint{}, false
}
