package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultPort is the gossip port (UDP and TCP) every node uses.
const DefaultPort = 33434

// Config configures a Cluster.
type Config struct {
	// BindAddr is the address memberlist listens on. Zero: all addresses.
	BindAddr netip.Addr
	// AdvertiseAddr is the address other members reach us on, and the
	// address they trace and ping (-gossipAddr). Zero: DefaultAddr().
	AdvertiseAddr netip.Addr
	// Port is the gossip port, UDP and TCP. In production every node uses
	// DefaultPort; tests give each node its own, 0 picks a free one.
	Port int
	// Seeds are host:port (or host, meaning Port) of members to join.
	// Empty: this node starts a cluster of its own and waits to be joined.
	Seeds []string
	// NodeName is unique in the cluster. Empty: "<hostname>-<advertise addr>".
	NodeName string
	// Role is RoleAgent or RoleAggregator.
	Role string
	// HTTPPort and PingPort are advertised in the node meta.
	HTTPPort uint16
	PingPort uint16
	// HTTPAddr is the address members' aggregators reach our API on
	// (-httpAdvertise), advertised in the node meta. Zero: AdvertiseAddr.
	HTTPAddr netip.Addr
	// Version is the software version advertised in the node meta.
	Version string
	// GossipKey enables memberlist encryption (AES-128/192/256): it must be
	// 16, 24 or 32 bytes. Nil: gossip in clear.
	GossipKey []byte

	// JoinBackoffMin and JoinBackoffMax bound the exponential backoff (with
	// jitter) between join attempts while no seed answers. The same loop
	// re-joins the seeds when this node finds itself alone.
	JoinBackoffMin time.Duration
	JoinBackoffMax time.Duration
	// LeaveTimeout bounds the leave broadcast on shutdown.
	LeaveTimeout time.Duration
	// FailedGrace is how long a member that gossip declares dead (rather
	// than one that announced its leave) is still reported to the handlers,
	// so still probed and merged (-failedPeerGrace): a fault that cuts a
	// member's gossip is what dnms must keep measuring. 0: forget it at once.
	FailedGrace time.Duration
	// Reachable, when set, tells whether probes still reach a member that
	// gossip declared dead (some path answers, or its API stream is up).
	// A failed member it says no to is forgotten at once, and one in its
	// grace as soon as it says no: only a member cut off from gossip but
	// still answering is kept. Called from the event goroutine.
	Reachable func(Peer) bool
	// StateDir, when set, keeps the known members across restarts
	// (-stateDir): a restarted node joins them itself (state.go).
	StateDir string

	// Logger receives our logs and memberlist's. Nil: slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics. Nil: no metrics are registered.
	Registerer prometheus.Registerer

	// Tune, when set, is applied last to the memberlist configuration
	// (tests use memberlist.DefaultLocalConfig timings).
	Tune func(*memberlist.Config)
}

// DefaultConfig returns the production defaults: gossip on DefaultPort,
// agent role, the seed's HTTP (12345) and ping (33435) ports.
func DefaultConfig() Config {
	return Config{
		Port:           DefaultPort,
		Role:           RoleAgent,
		HTTPPort:       12345,
		PingPort:       33435,
		Version:        "dev",
		JoinBackoffMin: 500 * time.Millisecond,
		JoinBackoffMax: 30 * time.Second,
		LeaveTimeout:   2 * time.Second,
		FailedGrace:    2 * time.Minute,
	}
}

// validate fills defaults that need the environment and checks the rest.
func (c *Config) validate() error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("cluster: gossip port %d out of range 0-65535", c.Port)
	}
	if _, ok := roleCode(c.Role); !ok {
		return fmt.Errorf("cluster: role %q: want %q or %q", c.Role, RoleAgent, RoleAggregator)
	}
	if c.HTTPPort == 0 {
		return errors.New("cluster: HTTP port must be set (1-65535)")
	}
	if c.PingPort == 0 {
		return errors.New("cluster: ping port must be set (1-65535)")
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("cluster: gossip key is %d bytes: want 16, 24 or 32 (AES-128/192/256)", len(c.GossipKey))
	}
	if c.JoinBackoffMin <= 0 || c.JoinBackoffMax < c.JoinBackoffMin {
		return fmt.Errorf("cluster: join backoff min %v max %v: want 0 < min <= max", c.JoinBackoffMin, c.JoinBackoffMax)
	}
	if c.FailedGrace < 0 {
		return fmt.Errorf("cluster: failed-peer grace %v must not be negative", c.FailedGrace)
	}
	if c.LeaveTimeout <= 0 {
		return fmt.Errorf("cluster: leave timeout %v must be positive", c.LeaveTimeout)
	}
	if _, err := (NodeMeta{Role: c.Role, HTTPPort: c.HTTPPort, PingPort: c.PingPort, Version: c.Version}).Encode(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if !c.AdvertiseAddr.IsValid() {
		if c.BindAddr.IsValid() && !c.BindAddr.IsUnspecified() {
			c.AdvertiseAddr = c.BindAddr
		} else {
			a, err := DefaultAddr()
			if err != nil {
				return fmt.Errorf("cluster: no advertise address given and %w", err)
			}
			c.AdvertiseAddr = a
		}
	}
	c.AdvertiseAddr = c.AdvertiseAddr.Unmap()
	if c.AdvertiseAddr.IsUnspecified() {
		return fmt.Errorf("cluster: advertise address %s is unspecified", c.AdvertiseAddr)
	}
	if c.NodeName == "" {
		c.NodeName = DefaultNodeName(c.AdvertiseAddr)
	}
	for _, s := range c.Seeds {
		if strings.TrimSpace(s) == "" {
			return errors.New("cluster: empty seed address")
		}
	}
	return nil
}

// DefaultAddr picks the local address other hosts most likely reach us on,
// without sending anything: the first global unicast IPv4 address of the
// interface holding the IPv4 default route (lowest metric), else the first
// global unicast address of any interface that is up.
func DefaultAddr() (netip.Addr, error) {
	if f, err := os.Open("/proc/net/route"); err == nil {
		ifname := defaultRouteIface(f)
		_ = f.Close()
		if ifname != "" {
			if ifi, err := net.InterfaceByName(ifname); err == nil {
				if a, ok := firstGlobal(ifi); ok {
					return a, nil
				}
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list interfaces: %w", err)
	}
	var v6 netip.Addr
	for i := range ifs {
		if ifs[i].Flags&net.FlagUp == 0 || ifs[i].Flags&net.FlagLoopback != 0 {
			continue
		}
		if a, ok := firstGlobal(&ifs[i]); ok {
			if a.Is4() {
				return a, nil
			}
			if !v6.IsValid() {
				v6 = a
			}
		}
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Addr{}, errors.New("found no global unicast address on any interface that is up")
}

// defaultRouteIface parses /proc/net/route and returns the interface of the
// default route with the lowest metric, or "".
func defaultRouteIface(r io.Reader) string {
	sc := bufio.NewScanner(r)
	best, bestMetric := "", -1
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&0x1 == 0 { // RTF_UP
			continue
		}
		m, err := strconv.Atoi(f[6])
		if err != nil {
			continue
		}
		if bestMetric < 0 || m < bestMetric {
			best, bestMetric = f[0], m
		}
	}
	return best
}

func firstGlobal(ifi *net.Interface) (netip.Addr, bool) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	var v6 netip.Addr
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr().Unmap()
		if !ip.IsGlobalUnicast() {
			continue
		}
		if ip.Is4() {
			return ip, true
		}
		if !v6.IsValid() {
			v6 = ip
		}
	}
	return v6, v6.IsValid()
}

// DefaultNodeName is the node name when none is given:
// "<hostname>-<advertise addr>".
func DefaultNodeName(advertise netip.Addr) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "dnms"
	}
	return h + "-" + advertise.String()
}
