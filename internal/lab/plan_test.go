package lab

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

var labNet = netip.MustParsePrefix("198.18.0.0/15")

func TestPlan(t *testing.T) {
	for _, cfg := range []Config{
		{Prefix: "a", Spines: 1, Leaves: 1, HostsPerLeaf: 1},
		{Prefix: "b", Spines: 2, Leaves: 2, HostsPerLeaf: 1},
		{Prefix: "dlab", Spines: 2, Leaves: 3, HostsPerLeaf: 2},
		{Prefix: "l0123456", Spines: 4, Leaves: 8, HostsPerLeaf: 3},
		{Prefix: "big", Spines: 16, Leaves: 128, HostsPerLeaf: 1},
	} {
		t.Run(cfg.Prefix, func(t *testing.T) {
			topo, err := plan(cfg)
			if err != nil {
				t.Fatal(err)
			}
			nh := cfg.Leaves * cfg.HostsPerLeaf
			if len(topo.Routers) != cfg.Spines+cfg.Leaves || len(topo.Hosts) != nh || len(topo.Links) != nh+cfg.Spines*cfg.Leaves {
				t.Fatalf("%d routers, %d hosts, %d links", len(topo.Routers), len(topo.Hosts), len(topo.Links))
			}
			seen := map[netip.Addr]string{}
			addr := func(a netip.Addr, who string) {
				t.Helper()
				if !labNet.Contains(a) {
					t.Errorf("%s: %s outside %s", who, a, labNet)
				}
				if prev, dup := seen[a]; dup {
					t.Errorf("%s: %s already used by %s", who, a, prev)
				}
				seen[a] = who
			}
			nss := map[string]bool{}
			for _, r := range topo.Routers {
				addr(r.Loopback, r.Name)
				nss[r.NS] = true
			}
			for _, h := range topo.Hosts {
				addr(h.Addr, h.Name)
				nss[h.NS] = true
			}
			if len(nss) != len(topo.Routers)+len(topo.Hosts) {
				t.Errorf("namespace names not unique")
			}
			ifs := map[string]bool{}
			for _, l := range topo.Links {
				for _, e := range []Endpoint{l.A, l.B} {
					if len(e.Ifname) > 15 || len("dly"+e.Ifname+"p") > 15 {
						t.Errorf("link %s: interface %q too long", l.ID, e.Ifname)
					}
					if ifs[e.NS+"/"+e.Ifname] {
						t.Errorf("link %s: interface %s/%s twice", l.ID, e.NS, e.Ifname)
					}
					ifs[e.NS+"/"+e.Ifname] = true
					if !labNet.Contains(e.Addr) {
						t.Errorf("link %s: %s outside %s", l.ID, e.Addr, labNet)
					}
				}
				if strings.HasPrefix(l.A.Node, "leaf") { // fabric /31
					addr(l.A.Addr, l.ID)
					addr(l.B.Addr, l.ID)
					if p := netip.PrefixFrom(l.A.Addr, 31).Masked(); !p.Contains(l.B.Addr) {
						t.Errorf("link %s: %s and %s not in one /31", l.ID, l.A.Addr, l.B.Addr)
					}
				}
			}
			gt := topo.groundTruth()
			if len(gt.Pairs) != nh*(nh-1) {
				t.Fatalf("%d pairs, want %d", len(gt.Pairs), nh*(nh-1))
			}
			for _, p := range gt.Pairs {
				src, _ := topo.host(p.Src)
				dst, _ := topo.host(p.Dst)
				want := cfg.Spines
				if src.Leaf == dst.Leaf {
					want = 1
				}
				if len(p.Paths) != want {
					t.Fatalf("%s→%s: %d paths, want %d", p.Src, p.Dst, len(p.Paths), want)
				}
				spines := map[netip.Addr]bool{}
				for _, path := range p.Paths {
					if path[len(path)-1] != dst.Addr || path[0] != topo.Routers[cfg.Spines+leafIndex(src.Leaf)-1].Loopback {
						t.Fatalf("%s→%s: path %v", p.Src, p.Dst, path)
					}
					if len(path) == 4 {
						spines[path[1]] = true
					}
				}
				if src.Leaf != dst.Leaf && len(spines) != cfg.Spines {
					t.Fatalf("%s→%s: paths cross %d distinct spines, want %d", p.Src, p.Dst, len(spines), cfg.Spines)
				}
			}
			// Every leaf reaches every other leaf's hosts through every spine.
			for _, s := range topo.setups() {
				if !strings.Contains(s.NS, "-leaf") {
					continue
				}
				for _, r := range s.Routes {
					if strings.Contains(r, "198.19.") && strings.Contains(r, "nexthop") && strings.Count(r, "nexthop") != cfg.Spines {
						t.Fatalf("%s: route %q: want %d next hops", s.NS, r, cfg.Spines)
					}
				}
			}
		})
	}
}

func TestPlanRejects(t *testing.T) {
	for _, cfg := range []Config{
		{Prefix: "", Spines: 1, Leaves: 1, HostsPerLeaf: 1},
		{Prefix: "Bad", Spines: 1, Leaves: 1, HostsPerLeaf: 1},
		{Prefix: "a-b", Spines: 1, Leaves: 1, HostsPerLeaf: 1},
		{Prefix: "waytoolongprefix", Spines: 1, Leaves: 1, HostsPerLeaf: 1},
		{Prefix: "a", Spines: 0, Leaves: 1, HostsPerLeaf: 1},
		{Prefix: "a", Spines: 1, Leaves: 255, HostsPerLeaf: 1},
		{Prefix: "a", Spines: 1, Leaves: 1, HostsPerLeaf: 241},
		{Prefix: "a", Spines: 100, Leaves: 100, HostsPerLeaf: 1},
	} {
		if _, err := plan(cfg); err == nil {
			t.Errorf("plan(%+v): no error", cfg)
		}
	}
}

func TestSeedsDiffer(t *testing.T) {
	topo, err := plan(Config{Prefix: "a", Spines: 4, Leaves: 8, HostsPerLeaf: 1})
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string]bool{}
	for _, s := range topo.setups() {
		for _, sc := range s.Sysctls {
			if strings.HasSuffix(sc.Key, "hash_seed") {
				if seeds[sc.Value] {
					t.Fatalf("seed %s used twice", sc.Value)
				}
				seeds[sc.Value] = true
			}
		}
	}
	if len(seeds) != 12 {
		t.Fatalf("%d seeds for 12 routers", len(seeds))
	}
}

// The ground-truth JSON is what the demo and humans read: pinned.
func TestGroundTruthGolden(t *testing.T) {
	topo, err := plan(Config{Prefix: "dlab", Spines: 2, Leaves: 2, HostsPerLeaf: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(topo.groundTruth(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "groundtruth_2x2x1.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ground truth changed; rerun with -update if intended:\n%s", got)
	}
}

func TestNftScript(t *testing.T) {
	// Loss is on the sender's egress, never on the receiver's ingress.
	df := &dirFault{permille: 1000}
	if r := df.egressRules(); len(r) != 1 || r[0] != "meta protocol { ip, ip6 } drop" {
		t.Fatalf("100%%: %q", r)
	}
	if r := df.ingressRules(); r != nil {
		t.Fatalf("loss has ingress rules %q", r)
	}
	df.permille = 305
	df.de = &delayElement{mode: modeIngress}
	r := df.ingressRules()
	if len(r) != 1 || !strings.Contains(r[0], "ether saddr != "+delayMAC) {
		t.Fatalf("ingress-mode delay: %q", r)
	}
	if r := df.egressRules(); len(r) != 1 || !strings.Contains(r[0], "mod 1000 < 305") {
		t.Fatalf("loss with ingress-mode delay: egress %q", r)
	}
	df.de = &delayElement{mode: modeEgress, capIf: "cap0"}
	if r := df.egressRules(); len(r) != 2 || !strings.Contains(r[0], "mod 1000 < 305") || !strings.Contains(r[1], `fwd to "cap0"`) {
		t.Fatalf("loss then egress-mode delay: %q", r)
	}
	s := nftScript("t", "ingress", "eth0", nil)
	if s != "table netdev t\ndelete table netdev t\n" {
		t.Fatalf("empty script %q", s)
	}
	s = nftScript("t", "egress", "leaf1", []string{"drop"})
	if !strings.Contains(s, `type filter hook egress device "leaf1" priority -500; policy accept;`) {
		t.Fatalf("script %q", s)
	}
}

// udpFrame builds an Ethernet+IPv4+UDP frame with a wrong UDP checksum.
func udpFrame(payload []byte) []byte {
	b := make([]byte, 14+20+8+len(payload))
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{198, 19, 1, 10, 198, 19, 2, 10})
	u := ip[20:]
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], 7)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	binary.BigEndian.PutUint16(u[6:], 0xbeef)
	copy(u[8:], payload)
	return b
}

func TestFixChecksums(t *testing.T) {
	for _, payload := range [][]byte{nil, []byte("a"), []byte("dnms-lab-flow"), bytes.Repeat([]byte{0xff}, 1001)} {
		b := udpFrame(payload)
		fixChecksums(b)
		ip := b[14:]
		// Verifying: the one's-complement sum over pseudo header and
		// datagram, checksum included, is 0xffff.
		u := ip[20:]
		s := sum16(ip[12:20]) + 17 + uint32(len(u)) + sum16(u)
		if fold(s) != 0xffff {
			t.Errorf("payload %d bytes: checksum %#x does not verify", len(payload), binary.BigEndian.Uint16(u[6:]))
		}
	}
}

func FuzzFixChecksums(f *testing.F) {
	f.Add(udpFrame([]byte("x")))
	f.Add([]byte{})
	f.Add(make([]byte, 14))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 14 {
			return
		}
		fixChecksums(b) // must not panic on any frame
	})
}

func FuzzMatchICMP(f *testing.F) {
	f.Add([]byte{11, 0, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 28, 0, 0, 0, 0, 1, 17, 0, 0, 198, 19, 1, 10, 198, 19, 2, 10, 0x9c, 0x40, 0x82, 0x9a, 0, 8, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		matchICMP(b, netip.MustParseAddr("198.19.2.10"), 40000, 33434)
	})
}

func TestScan(t *testing.T) {
	var i int
	for s, want := range map[string]bool{"spine1": true, "spine12": true, "spine": false, "spine1x": false, "leaf1": false} {
		if got := scan(s, "spine%d", &i); got != want {
			t.Errorf("scan(%q) = %v", s, got)
		}
	}
}
