package lab

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
)

// Config describes a fabric.
type Config struct {
	// Prefix starts every namespace name ("<prefix>-spine1"). Tests use
	// UniquePrefix so that fabrics built in parallel never collide.
	Prefix string
	// Spines, Leaves and HostsPerLeaf size the leaf-spine fabric.
	Spines, Leaves, HostsPerLeaf int
	// DualHomed adds hosts "dual1".."dualK", each wired to two leaves
	// (dual k to leaf k and leaf k+1, wrapping) with eth0 and eth1, an ECMP
	// default route over both and its address on lo (routing on the host).
	// 0 (the default) adds none.
	DualHomed int
}

// DefaultConfig is the demo fabric: 2 spines, 3 leaves, 2 hosts per leaf.
func DefaultConfig() Config {
	return Config{Prefix: "dlab", Spines: 2, Leaves: 3, HostsPerLeaf: 2}
}

// Roles of routers.
const (
	RoleSpine = "spine"
	RoleLeaf  = "leaf"
)

// Host is an end host: one uplink (Ifname, always "eth0") to its leaf. A
// dual-homed host (Config.DualHomed) has Addr on lo, eth0 to Leaf and eth1
// to the second of Leaves.
type Host struct {
	Name   string     `json:"name"`
	NS     string     `json:"ns"`
	Addr   netip.Addr `json:"addr"`
	Ifname string     `json:"ifname"`
	Leaf   string     `json:"leaf"`
	// Leaves are a dual-homed host's two leaves (eth0's, eth1's); nil for
	// a host with one uplink.
	Leaves []string `json:"leaves,omitempty"`
}

// leaves are the leaves h is wired to.
func (h Host) leaves() []string {
	if len(h.Leaves) > 0 {
		return h.Leaves
	}
	return []string{h.Leaf}
}

// Router is a spine or a leaf. It sources every ICMP error from Loopback.
type Router struct {
	Name     string     `json:"name"`
	NS       string     `json:"ns"`
	Loopback netip.Addr `json:"loopback"`
	Role     string     `json:"role"`
}

// Endpoint is one end of a link: the node, its namespace, the interface
// name inside that namespace and its address on the link.
type Endpoint struct {
	Node   string     `json:"node"`
	NS     string     `json:"ns"`
	Ifname string     `json:"ifname"`
	Addr   netip.Addr `json:"addr"`
}

// Link is a veth pair. A is the lower tier (host or leaf), B the upper
// (leaf or spine). ID is "<A.Node>-<B.Node>".
type Link struct {
	ID string   `json:"id"`
	A  Endpoint `json:"a"`
	B  Endpoint `json:"b"`
}

// PathSet is every hop sequence a Paris traceroute from Src to Dst can see:
// router loopbacks in order, then Dst's address.
type PathSet struct {
	Src     string         `json:"src"`
	Dst     string         `json:"dst"`
	SrcAddr netip.Addr     `json:"src_addr"`
	DstAddr netip.Addr     `json:"dst_addr"`
	Paths   [][]netip.Addr `json:"paths"`
}

// GroundTruth is what the fabric really is; the CLI prints it as JSON.
type GroundTruth struct {
	Prefix  string    `json:"prefix"`
	Routers []Router  `json:"routers"`
	Hosts   []Host    `json:"hosts"`
	Links   []Link    `json:"links"`
	Pairs   []PathSet `json:"pairs"`
}

// Address plan, all inside 198.18.0.0/15:
//
//	spine i loopback      198.18.0.i/32
//	leaf j loopback       198.18.1.j/32
//	leaf–spine /31s       198.18.16.0/20, link k=(j-1)*spines+(i-1): spine .2k, leaf .2k+1
//	leaf j host subnet    198.19.j.0/24, leaf side 198.19.j.1/32 on every host port,
//	                      host n of leaf j 198.19.j.(9+n)/32
//	dual-homed host k     198.18.2.k/32 on its lo
const (
	maxSpines       = 254
	maxLeaves       = 254
	maxHostsPerLeaf = 240
	maxFabricLinks  = 2048 // /31s in 198.18.16.0/20
	maxPrefixLen    = 10
	maxDualHomed    = 254
)

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

func (c Config) validate() error {
	if !prefixRE.MatchString(c.Prefix) || len(c.Prefix) > maxPrefixLen {
		return fmt.Errorf("lab: prefix %q: want 1-%d lowercase letters/digits starting with a letter", c.Prefix, maxPrefixLen)
	}
	if c.Spines < 1 || c.Spines > maxSpines {
		return fmt.Errorf("lab: %d spines: want 1..%d", c.Spines, maxSpines)
	}
	if c.Leaves < 1 || c.Leaves > maxLeaves {
		return fmt.Errorf("lab: %d leaves: want 1..%d", c.Leaves, maxLeaves)
	}
	if c.HostsPerLeaf < 1 || c.HostsPerLeaf > maxHostsPerLeaf {
		return fmt.Errorf("lab: %d hosts per leaf: want 1..%d", c.HostsPerLeaf, maxHostsPerLeaf)
	}
	if c.DualHomed < 0 || c.DualHomed > maxDualHomed || c.DualHomed > 0 && c.Leaves < 2 {
		return fmt.Errorf("lab: %d dual-homed hosts: want 0..%d, and at least 2 leaves", c.DualHomed, maxDualHomed)
	}
	if c.Spines*c.Leaves > maxFabricLinks {
		return fmt.Errorf("lab: %d leaf-spine links: want at most %d", c.Spines*c.Leaves, maxFabricLinks)
	}
	return nil
}

func spineName(i int) string { return fmt.Sprintf("spine%d", i) }
func leafName(j int) string  { return fmt.Sprintf("leaf%d", j) }
func hostName(n int) string  { return fmt.Sprintf("host%d", n) }

func spineLoopback(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}) }
func leafLoopback(j int) netip.Addr  { return netip.AddrFrom4([4]byte{198, 18, 1, byte(j)}) }
func leafGateway(j int) netip.Addr   { return netip.AddrFrom4([4]byte{198, 19, byte(j), 1}) }
func hostSubnet(j int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(j), 0}), 24)
}
func hostAddr(j, n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, byte(j), byte(9 + n)}) }
func dualName(k int) string        { return fmt.Sprintf("dual%d", k) }
func dualAddr(k int) netip.Addr    { return netip.AddrFrom4([4]byte{198, 18, 2, byte(k)}) }

// p2p returns the spine-side and leaf-side addresses of the /31 between
// spine i and leaf j.
func p2p(spines, i, j int) (spineSide, leafSide netip.Addr) {
	k := (j-1)*spines + (i - 1)
	off := uint32(2 * k)
	base := uint32(198)<<24 | uint32(18)<<16 | uint32(16)<<8
	a := base + off
	return u32addr(a), u32addr(a + 1)
}

func u32addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// topology is the pure description of a fabric: names, addresses, links.
type topology struct {
	cfg     Config
	Routers []Router
	Hosts   []Host
	Links   []Link
}

func nsName(prefix, node string) string { return prefix + "-" + node }

func plan(cfg Config) (*topology, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &topology{cfg: cfg}
	for i := 1; i <= cfg.Spines; i++ {
		n := spineName(i)
		t.Routers = append(t.Routers, Router{Name: n, NS: nsName(cfg.Prefix, n), Loopback: spineLoopback(i), Role: RoleSpine})
	}
	for j := 1; j <= cfg.Leaves; j++ {
		n := leafName(j)
		t.Routers = append(t.Routers, Router{Name: n, NS: nsName(cfg.Prefix, n), Loopback: leafLoopback(j), Role: RoleLeaf})
	}
	hn := 0
	for j := 1; j <= cfg.Leaves; j++ {
		leaf := leafName(j)
		for n := 1; n <= cfg.HostsPerLeaf; n++ {
			hn++
			h := Host{Name: hostName(hn), NS: nsName(cfg.Prefix, hostName(hn)), Addr: hostAddr(j, n), Ifname: "eth0", Leaf: leaf}
			t.Hosts = append(t.Hosts, h)
			t.Links = append(t.Links, Link{
				ID: h.Name + "-" + leaf,
				A:  Endpoint{Node: h.Name, NS: h.NS, Ifname: "eth0", Addr: h.Addr},
				B:  Endpoint{Node: leaf, NS: nsName(cfg.Prefix, leaf), Ifname: h.Name, Addr: leafGateway(j)},
			})
		}
	}
	for k := 1; k <= cfg.DualHomed; k++ {
		j1 := (k-1)%cfg.Leaves + 1
		j2 := j1%cfg.Leaves + 1
		h := Host{Name: dualName(k), NS: nsName(cfg.Prefix, dualName(k)), Addr: dualAddr(k), Ifname: "eth0",
			Leaf: leafName(j1), Leaves: []string{leafName(j1), leafName(j2)}}
		t.Hosts = append(t.Hosts, h)
		for u, j := range []int{j1, j2} {
			t.Links = append(t.Links, Link{
				ID: h.Name + "-" + leafName(j),
				A:  Endpoint{Node: h.Name, NS: h.NS, Ifname: fmt.Sprintf("eth%d", u), Addr: h.Addr},
				B:  Endpoint{Node: leafName(j), NS: nsName(cfg.Prefix, leafName(j)), Ifname: h.Name, Addr: leafGateway(j)},
			})
		}
	}
	for j := 1; j <= cfg.Leaves; j++ {
		leaf := leafName(j)
		for i := 1; i <= cfg.Spines; i++ {
			spine := spineName(i)
			s, l := p2p(cfg.Spines, i, j)
			t.Links = append(t.Links, Link{
				ID: leaf + "-" + spine,
				A:  Endpoint{Node: leaf, NS: nsName(cfg.Prefix, leaf), Ifname: spine, Addr: l},
				B:  Endpoint{Node: spine, NS: nsName(cfg.Prefix, spine), Ifname: leaf, Addr: s},
			})
		}
	}
	return t, nil
}

func (t *topology) router(name string) (Router, bool) {
	for _, r := range t.Routers {
		if r.Name == name {
			return r, true
		}
	}
	return Router{}, false
}

func (t *topology) host(name string) (Host, bool) {
	for _, h := range t.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// nsOf maps a node name or a namespace name to the namespace name.
func (t *topology) nsOf(nodeOrNS string) (string, bool) {
	if r, ok := t.router(nodeOrNS); ok {
		return r.NS, true
	}
	if h, ok := t.host(nodeOrNS); ok {
		return h.NS, true
	}
	for _, r := range t.Routers {
		if r.NS == nodeOrNS {
			return r.NS, true
		}
	}
	for _, h := range t.Hosts {
		if h.NS == nodeOrNS {
			return h.NS, true
		}
	}
	return "", false
}

// namespaces lists every namespace of the fabric: routers then hosts.
func (t *topology) namespaces() []string {
	var out []string
	for _, r := range t.Routers {
		out = append(out, r.NS)
	}
	for _, h := range t.Hosts {
		out = append(out, h.NS)
	}
	return out
}

func (t *topology) groundTruth() GroundTruth {
	g := GroundTruth{
		Prefix:  t.cfg.Prefix,
		Routers: append([]Router(nil), t.Routers...),
		Hosts:   append([]Host(nil), t.Hosts...),
		Links:   append([]Link(nil), t.Links...),
	}
	for _, src := range t.Hosts {
		for _, dst := range t.Hosts {
			if src.Name == dst.Name {
				continue
			}
			ps := PathSet{Src: src.Name, Dst: dst.Name, SrcAddr: src.Addr, DstAddr: dst.Addr}
			for _, sln := range src.leaves() {
				sl, _ := t.router(sln)
				if slices.Contains(dst.leaves(), sln) {
					ps.Paths = append(ps.Paths, []netip.Addr{sl.Loopback, dst.Addr})
					continue
				}
				for _, r := range t.Routers {
					if r.Role != RoleSpine {
						continue
					}
					for _, dln := range dst.leaves() {
						dl, _ := t.router(dln)
						ps.Paths = append(ps.Paths, []netip.Addr{sl.Loopback, r.Loopback, dl.Loopback, dst.Addr})
					}
				}
			}
			g.Pairs = append(g.Pairs, ps)
		}
	}
	return g
}
