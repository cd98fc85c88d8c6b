package loader

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Which interfaces the programs go on. With Config.Ifaces empty: every
// interface that carries a default route (IPv4 or IPv6, every next hop of a
// multipath route), because that is where probes to peers leave and their
// acks come back; the host's own address may sit on lo or a dummy
// interface (routing on the host). A bond's slave counts as its bond, so a
// bond and its slaves get the programs once, on the bond. The set is
// re-evaluated whenever a link or a route changes (netlink subscriptions,
// plus a periodic check), and the programs follow it.

// unusable next hops: their interface is down or has no carrier.
const unusable = unix.RTNH_F_DEAD | unix.RTNH_F_LINKDOWN

// routeIfaces lists the interfaces of the default routes' next hops.
func routeIfaces(nl *netlink.Handle) ([]string, error) {
	seen := map[int]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue // not a default route
				}
			}
			if r.LinkIndex > 0 && r.Flags&unusable == 0 {
				seen[r.LinkIndex] = true
			}
			for _, nh := range r.MultiPath {
				if nh.Flags&unusable == 0 {
					seen[nh.LinkIndex] = true
				}
			}
		}
	}
	var names []string
	for idx := range seen {
		lnk, err := nl.LinkByIndex(idx)
		if err != nil {
			continue // gone meanwhile: the next change re-evaluates
		}
		if m := lnk.Attrs().MasterIndex; m > 0 {
			if master, err := nl.LinkByIndex(m); err == nil && master.Type() == "bond" {
				lnk = master
			}
		}
		if name := lnk.Attrs().Name; !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// errNoEthernet marks a link the programs cannot parse.
var errNoEthernet = errors.New("no Ethernet header")

// checkLinkType refuses links whose frames have no Ethernet header
// (wireguard, ipip, sit, gre, tun): the programs read IP at offset 14.
func checkLinkType(lnk netlink.Link) error {
	switch et := lnk.Attrs().EncapType; et {
	case "ether", "loopback":
		return nil
	default:
		return fmt.Errorf("%s is a %s link (type %s): %w, and dnms's eBPF programs parse Ethernet frames",
			lnk.Attrs().Name, lnk.Type(), et, errNoEthernet)
	}
}

// wantIfaces is the interface set the programs should be on now.
func (l *Loader) wantIfaces() ([]string, error) {
	if len(l.cfg.Ifaces) > 0 {
		return l.cfg.Ifaces, nil
	}
	return routeIfaces(l.nl)
}

// reconcile makes the attachments match wantIfaces: it detaches from
// interfaces that left the set (or were re-created under a new index) and
// attaches to new ones. Links of the wrong type are refused with one log
// line each time they enter the set. It returns the attached interfaces.
func (l *Loader) reconcile() ([]string, error) {
	l.nlMu.Lock()
	defer l.nlMu.Unlock()
	if l.nl == nil {
		return nil, nil // closed
	}
	want, err := l.wantIfaces()
	if err != nil {
		return l.attachedNames(), err
	}
	links := map[string]netlink.Link{}
	for _, name := range want {
		lnk, err := l.nl.LinkByName(name)
		if err != nil {
			if _, known := l.refused[name]; !known {
				l.cfg.Logger.Warn("ebpf loader: no such interface", "iface", name, "err", err)
			}
			l.refused[name] = true
			continue
		}
		if err := checkLinkType(lnk); err != nil {
			if _, known := l.refused[name]; !known {
				l.cfg.Logger.Warn("ebpf loader: not attaching: " + err.Error())
			}
			l.refused[name] = true
			continue
		}
		delete(l.refused, name)
		links[name] = lnk
	}
	var keep []attachment
	var gone []string
	for _, a := range l.attached {
		if lnk, ok := links[a.iface]; ok && lnk.Attrs().Index == a.ifindex {
			keep = append(keep, a)
			continue
		}
		if err := a.detach(); err != nil && !errors.Is(err, unix.ENODEV) {
			l.cfg.Logger.Debug("ebpf loader: detach", "err", err)
		}
		if !slices.Contains(gone, a.iface) {
			gone = append(gone, a.iface)
		}
	}
	l.attached = keep
	var errs []error
	var added []string
	for name, lnk := range links {
		if slices.ContainsFunc(l.attached, func(a attachment) bool { return a.iface == name }) {
			continue
		}
		as, err := l.attachIface(name, lnk)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.attached = append(l.attached, as...)
		added = append(added, name)
	}
	if l.following && (len(added) > 0 || len(gone) > 0) {
		l.cfg.Logger.Info("ebpf loader: interfaces changed", "attached", strings.Join(l.attachedNames(), ","),
			"added", strings.Join(added, ","), "removed", strings.Join(gone, ","))
	}
	l.following = true // later changes are logged
	return l.attachedNames(), errors.Join(errs...)
}

// attachedNames lists the interfaces with programs, sorted. nlMu held.
func (l *Loader) attachedNames() []string {
	var out []string
	for _, a := range l.attached {
		if !slices.Contains(out, a.iface) {
			out = append(out, a.iface)
		}
	}
	sort.Strings(out)
	return out
}

// attachments is a copy of the current attachments.
func (l *Loader) attachments() []attachment {
	l.nlMu.Lock()
	defer l.nlMu.Unlock()
	return slices.Clone(l.attached)
}

// watchLinks subscribes to link and route changes and signals
// l.linksChanged (without blocking) on each until l.stopWatch closes.
// It must run on the thread Load runs on: the netlink sockets belong to that
// thread's network namespace (entering another one would need
// CAP_SYS_ADMIN). Subscription errors are logged once; the periodic
// reconcile still follows changes.
func (l *Loader) watchLinks() {
	links := make(chan netlink.LinkUpdate, 16)
	routes := make(chan netlink.RouteUpdate, 64)
	errCb := func(err error) { l.cfg.Logger.Debug("ebpf loader: netlink subscription", "err", err) }
	if err := netlink.LinkSubscribeWithOptions(links, l.stopWatch, netlink.LinkSubscribeOptions{ErrorCallback: errCb}); err != nil {
		l.cfg.Logger.Warn("ebpf loader: cannot follow link changes; checking every few seconds instead", "err", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, l.stopWatch, netlink.RouteSubscribeOptions{ErrorCallback: errCb}); err != nil {
		l.cfg.Logger.Warn("ebpf loader: cannot follow route changes; checking every few seconds instead", "err", err)
	}
	signal := func() {
		select {
		case l.linksChanged <- struct{}{}:
		default:
		}
	}
	go func() {
		for links != nil || routes != nil {
			select {
			case <-l.stopWatch:
				return
			case _, ok := <-links:
				if !ok {
					links = nil
					continue
				}
				signal()
			case _, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				signal()
			}
		}
	}()
}

// ifaceNames lists the interfaces with programs now.
func (l *Loader) ifaceNames() []string {
	l.nlMu.Lock()
	defer l.nlMu.Unlock()
	return l.attachedNames()
}
