package loader

// FIB answers route lookups in the local routing table over netlink: how
// many next hops the route towards a destination has. The mapper uses it to
// probe TTL 1 once per peer when every flow must leave through the same
// first router. (Netlink lives in this package only.)

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FIB looks routes up in the network namespace it was opened in. Its
// methods are safe for concurrent use.
type FIB struct {
	mu sync.Mutex
	h  *netlink.Handle // nil once closed
}

// OpenFIB opens a netlink route socket in the calling thread's network
// namespace; lookups answer for that namespace whichever thread makes them.
func OpenFIB() (*FIB, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("loader: fib: netlink socket: %w", err)
	}
	return &FIB{h: h}, nil
}

// Close closes the netlink socket.
func (t *FIB) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.h != nil {
		t.h.Close()
		t.h = nil
	}
	return nil
}

// ErrNextHopsUnknown wraps a route whose next hops the answer does not say (a
// nexthop object without compat expansion, a blackhole, …).
var ErrNextHopsUnknown = errors.New("loader: fib: next hops unknown")

// NextHops returns the number of next hops of the route the kernel would
// match for dst (`ip route get fibmatch`): the entries of a multipath route,
// else 1 for a single gateway or a directly connected (or local)
// destination.
func (t *FIB) NextHops(dst netip.Addr) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.h == nil {
		return 0, errors.New("loader: fib: table closed")
	}
	// FIBMatch returns the FIB entry with every next hop; a plain route get
	// returns the one next hop the kernel picked for a flow it made up.
	rs, err := t.h.RouteGetWithOptions(dst.Unmap().AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		return 0, fmt.Errorf("loader: fib: route get %s: %w", dst, err)
	}
	if len(rs) == 0 {
		return 0, fmt.Errorf("loader: fib: route get %s: no route: %w", dst, ErrNextHopsUnknown)
	}
	r := rs[0]
	switch {
	case r.Type != unix.RTN_UNICAST && r.Type != unix.RTN_LOCAL:
		return 0, fmt.Errorf("loader: fib: route to %s has type %d: %w", dst, r.Type, ErrNextHopsUnknown)
	case len(r.MultiPath) > 0:
		return len(r.MultiPath), nil
	case r.Gw != nil || r.LinkIndex > 0:
		return 1, nil
	}
	return 0, fmt.Errorf("loader: fib: route to %s names no next hop: %w", dst, ErrNextHopsUnknown)
}
