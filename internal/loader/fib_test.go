package loader

import (
	"net/netip"
	"testing"

	"github.com/dnms/dnms/internal/lab"
)

func TestFIBLoopbackSingleNextHop(t *testing.T) {
	tb, err := OpenFIB()
	if err != nil {
		t.Skipf("no netlink here: %v", err)
	}
	defer tb.Close()
	n, err := tb.NextHops(netip.MustParseAddr("127.0.0.1"))
	if err != nil || n != 1 {
		t.Fatalf("NextHops(127.0.0.1) = %d, %v; want 1", n, err)
	}
	tb.Close()
	if _, err := tb.NextHops(netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Error("lookup after Close succeeded")
	}
}

// In the lab, a host's default route has one gateway and a leaf's route to
// the other leaf's hosts has one next hop per spine.
func TestFIBLabNextHops(t *testing.T) {
	f := lab.New(t, lab.Config{Prefix: lab.UniquePrefix(t), Spines: 3, Leaves: 2, HostsPerLeaf: 1})
	h1, h2 := f.Host("host1"), f.Host("host2")
	open := func(ns string) *FIB {
		t.Helper()
		var tb *FIB
		if err := f.Do(ns, func() (err error) { tb, err = OpenFIB(); return err }); err != nil {
			t.Fatalf("open in %s: %v", ns, err)
		}
		t.Cleanup(func() { tb.Close() })
		return tb
	}
	host := open(h1.NS)
	if n, err := host.NextHops(h2.Addr); err != nil || n != 1 {
		t.Errorf("host1 → %v: %d next hops, %v; want 1", h2.Addr, n, err)
	}
	leaf := open(f.Router(h1.Leaf).NS)
	if n, err := leaf.NextHops(h2.Addr); err != nil || n != 3 {
		t.Errorf("%s → %v: %d next hops, %v; want 3 (one per spine)", h1.Leaf, h2.Addr, n, err)
	}
	if n, err := leaf.NextHops(netip.MustParseAddr("203.0.113.1")); err == nil {
		t.Errorf("leaf has no default route, yet NextHops says %d", n)
	}
}
