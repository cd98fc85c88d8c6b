package loader

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The kernel reflector looks up each ack's route (bpf_fib_lookup) in the
// network namespace of the thread that runs it. Program.Run tests run in
// fibNS: a private, unnamed namespace (gone with the process) where host B
// (addrB, addrB6, MAC macB on the veth "refl0") has a route and a
// permanent neighbour entry (macA) for the tests' peer A, a route without a
// neighbour entry for addrNoNeigh, and no route to addrNoRoute. The FIB thus
// answers the way the old swapped-MACs rewrite did for A, and the tests see
// the other two outcomes too.
var (
	addrNoNeigh = mustAddr("198.18.0.3")
	addrNoRoute = mustAddr("198.18.0.4")

	fibOnce sync.Once
	fibNS   netns.NsHandle
	fibErr  error
)

// inFibNS runs fn on a thread inside fibNS (made on first use). The thread
// is thrown away afterwards.
func inFibNS(t testing.TB, fn func()) {
	t.Helper()
	fibOnce.Do(func() { fibNS, fibErr = makeFibNS() })
	if fibErr != nil {
		t.Fatalf("fib test namespace: %v", fibErr)
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := netns.Set(fibNS); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("enter fib test namespace: %v", err)
	}
}

// enterFibNS moves the calling goroutine, locked to its thread, into fibNS
// until the returned function is called (benchmarks: no thread per run).
func enterFibNS(tb testing.TB) (leave func()) {
	tb.Helper()
	fibOnce.Do(func() { fibNS, fibErr = makeFibNS() })
	if fibErr != nil {
		tb.Fatalf("fib test namespace: %v", fibErr)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	if err := netns.Set(fibNS); err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	return func() {
		defer orig.Close()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread() // else the thread stays locked and dies with the goroutine
		}
	}
}

func makeFibNS() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is in the new namespace
		ns, err := netns.New()
		if err == nil {
			err = setupFibNS()
		}
		ch <- result{ns, err}
	}()
	r := <-ch
	return r.ns, r.err
}

func setupFibNS() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	// A veth pair (this kernel has no dummy driver); refl1 only gives
	// refl0 its carrier.
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "refl0", HardwareAddr: net.HardwareAddr(macB[:])}, PeerName: "refl1"}
	if err := netlink.LinkAdd(v); err != nil {
		return err
	}
	for _, n := range []string{"refl1", "refl0"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	link, err := netlink.LinkByName("refl0")
	if err != nil {
		return err
	}
	for _, a := range []string{addrB.String() + "/32", addrB6.String() + "/128"} {
		nla, _ := netlink.ParseAddr(a)
		nla.Flags |= 0x80 // IFA_F_NODAD: usable at once
		if err := netlink.AddrAdd(link, nla); err != nil {
			return err
		}
	}
	idx := link.Attrs().Index
	for _, dst := range []string{addrA.String() + "/32", addrNoNeigh.String() + "/32", addrA6.String() + "/128"} {
		_, n, _ := net.ParseCIDR(dst)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: n, Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
	}
	for _, ip := range []string{addrA.String(), addrA6.String()} {
		if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: idx, IP: net.ParseIP(ip),
			HardwareAddr: net.HardwareAddr(macA[:]), State: netlink.NUD_PERMANENT}); err != nil {
			return err
		}
	}
	for _, p := range loForwarding {
		if err := os.WriteFile(p, []byte("1\n"), 0); err != nil {
			return err
		}
	}
	return nil
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestReflectorRoutesAckThroughFIB: the ack leaves where the FIB says.
// A peer with a resolved neighbour gets its MAC and refl0's (bpf_redirect);
// a next hop without a neighbour entry goes to bpf_redirect_neigh, which
// writes the MACs itself (the rewritten ack keeps the ping's); a peer the FIB
// has no route for is passed to userspace untouched and counted.
func TestReflectorRoutesAckThroughFIB(t *testing.T) {
	objs, _ := testObjs(t, DefaultConfig())
	l := &Loader{objs: *objs}
	from := func(a netip.Addr) []byte {
		p := pingFrame(ping(1))
		p.src = a
		return p.bytes()
	}

	ret, out := run(t, objs.DnmsIngress, from(addrA))
	if ret != tcActRedirect || !bytes.Equal(out[0:6], macA[:]) || !bytes.Equal(out[6:12], macB[:]) {
		t.Errorf("resolved neighbour: verdict %d, macs % x, want redirect to %x from %x", ret, out[0:12], macA, macB)
	}

	in := from(addrNoNeigh)
	ret, out = run(t, objs.DnmsIngress, in)
	if ret != tcActRedirect || !bytes.Equal(out[0:12], in[0:12]) {
		t.Errorf("unresolved neighbour: verdict %d, macs % x, want redirect with the MACs left to bpf_redirect_neigh", ret, out[0:12])
	}
	if h := parseHdr(out[payloadOff:]); h.Type != typeAck {
		t.Errorf("unresolved neighbour: type %d, want an ack", h.Type)
	}

	before := l.stat(bpfDnmsStatDNMS_STAT_REFLECT_PASS)
	in = from(addrNoRoute)
	ret, out = run(t, objs.DnmsIngress, in)
	if ret != tcActOK || !bytes.Equal(out[:len(in)], in) {
		t.Errorf("no route: verdict %d, want TC_ACT_OK and the ping untouched for userspace", ret)
	}
	if got := l.stat(bpfDnmsStatDNMS_STAT_REFLECT_PASS) - before; got != 1 {
		t.Errorf("reflect_passed counted %d, want 1", got)
	}
}
