package loader

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/dnms/dnms/internal/lab"
)

func TestCheckLinkType(t *testing.T) {
	for _, tc := range []struct {
		link netlink.Link
		ok   bool
	}{
		{&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", EncapType: "ether"}}, true},
		{&netlink.Bond{LinkAttrs: netlink.LinkAttrs{Name: "bond0", EncapType: "ether"}}, true},
		{&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", EncapType: "loopback"}}, true},
		{&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "wg0", EncapType: "none"}}, false},
		{&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: "ipip0", EncapType: "ipip"}}, false},
		{&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0", EncapType: "none"}}, false},
	} {
		err := checkLinkType(tc.link)
		if (err == nil) != tc.ok || err != nil && (!errors.Is(err, errNoEthernet) || !strings.Contains(err.Error(), tc.link.Attrs().Name)) {
			t.Errorf("%s (%s): %v", tc.link.Attrs().Name, tc.link.Attrs().EncapType, err)
		}
	}
}

// TestFollowsDefaultRoutes: with no interfaces given, the programs go on
// both uplinks of a dual-homed host (its address is on lo), leave the one
// whose link goes down and come back when it is up again. A tunnel without
// an Ethernet header is refused with one log line.
func TestFollowsDefaultRoutes(t *testing.T) {
	lab.RequireRoot(t)
	f := lab.New(t, lab.Config{Spines: 1, Leaves: 2, HostsPerLeaf: 1, DualHomed: 1})
	d := f.Host("dual1")
	var logs lab.Output
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	l, _ := liveLoader(t, f, d, cfg)
	want := func(ifaces ...string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second) // the periodic check is every 5 s: netlink events must do it
		for {
			got := l.Status().Ifaces
			if slices.Equal(got, ifaces) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("attached to %v, want %v\nlog:\n%s", got, ifaces, logs.String())
			}
			time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
		}
	}
	want("eth0", "eth1")
	up := f.LinkBetween("dual1", "leaf1")
	if err := f.SetDown(up, true); err != nil {
		t.Fatal(err)
	}
	want("eth1")
	if err := f.SetDown(up, false); err != nil {
		t.Fatal(err)
	}
	want("eth0", "eth1")

	// A link without an Ethernet header (a TUN device: link/none, like
	// wireguard; this kernel has neither ipip nor wireguard) is refused,
	// in one line, when asked for by name. The namespace goes with the lab.
	if out, err := f.Exec(d.NS, "ip", "tuntap", "add", "tun0", "mode", "tun"); err != nil {
		t.Fatalf("make a tun device: %v %s", err, out)
	}
	var tunLogs lab.Output
	tcfg := DefaultConfig()
	tcfg.Ifaces = []string{"tun0"}
	tcfg.Logger = slog.New(slog.NewTextHandler(&tunLogs, nil))
	err := f.Do(d.NS, func() error {
		l, err := Load(tcfg)
		if err == nil {
			l.Close()
			return errors.New("attached to an ipip tunnel")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(tunLogs.String(), "no Ethernet header"); n != 1 {
		t.Errorf("refusal logged %d times, want once:\n%s", n, tunLogs.String())
	}
}
