package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// config is everything the flags say. cmd/dnms is the only place that knows
// about flags; components get their own Config structs built from this.
type config struct {
	GossipAddr      netip.Addr // advertised and bound gossip address; also the probe address
	GossipPort      uint16
	Peer            string // seed host:port, "" = standalone
	Aggregator      bool
	HTTPAddr        string
	PingPort        uint16
	MapInterval     time.Duration
	MapSrcPortStart uint16
	MapSrcPortEnd   uint16
	PingPeerIntv    time.Duration
	PingRouteIntv   time.Duration
	PingTimeout     time.Duration
	MetricRingSize  int
	HTTPAllowOrigin string
	HTTPToken       string
	AggregatorToken string
	Timestamps      string // auto|ebpf|kernel|user
	EBPFReflector   bool
	Ifaces          []string
	ProbeKey        []byte
	GossipKey       []byte
	NodeName        string
	LogLevel        string
	Scale           scaleConfig // probe budget and metrics detail (scale.go)
}

// errHelp is returned when the user asked for -h; main exits 0.
var errHelp = flag.ErrHelp

// parseFlags turns argv into a validated config. It never starts anything:
// every error here is reported before any socket, eBPF program or goroutine
// exists.
func parseFlags(args []string, out io.Writer, localIP func() (netip.Addr, error)) (*config, error) {
	fs := flag.NewFlagSet("dnms", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		gossipAddr, peer, httpAddr, allowOrigin, httpToken, aggToken string
		timestamps, ifaces, probeKey, gossipKey, nodeName, logLevel  string
		pingPort, gossipPort, portStart, portEnd, ringSize           int
		mapIntv, peerIntv, routeIntv, timeout                        time.Duration
		aggregator, reflector                                        bool
	)
	fs.StringVar(&gossipAddr, "gossipAddr", "", "IP address to gossip and probe from (default: the local IP of the default route)")
	fs.IntVar(&gossipPort, "gossipPort", 33434, "gossip port (UDP and TCP)")
	fs.StringVar(&peer, "peer", "", "seed `host:port` to join; empty runs a standalone node")
	fs.BoolVar(&aggregator, "aggregator", false, "also aggregate every member's graph and serve /v1/aggregator/...")
	fs.StringVar(&httpAddr, "httpAddr", ":12345", "HTTP listen address for the API, SSE and /metrics")
	fs.IntVar(&pingPort, "pingPort", 33435, "UDP port that receives pings, trace probes and acks")
	fs.DurationVar(&mapIntv, "mapInterval", time.Second, "pause between traces inside one sweep")
	fs.IntVar(&portStart, "mapSrcPortStart", 0, "first UDP source port swept for ECMP paths (default pingPort+1)")
	fs.IntVar(&portEnd, "mapSrcPortEnd", 0, "last UDP source port swept for ECMP paths (default pingPort+11)")
	fs.DurationVar(&peerIntv, "pingPeerInterval", 100*time.Millisecond, "how often the pinger visits each peer")
	fs.DurationVar(&routeIntv, "pingRouteInterval", time.Second, "how often each route (peer, source port) is pinged")
	fs.DurationVar(&timeout, "pingTimeout", time.Second, "a ping without an ack after this long is lost")
	fs.IntVar(&ringSize, "metricRingSize", 100, "samples kept per route for loss, latency and jitter")
	fs.StringVar(&allowOrigin, "httpAllowOrigin", "*", "Access-Control-Allow-Origin on every HTTP response")
	fs.StringVar(&httpToken, "httpToken", "", "when set, every endpoint but /healthz requires Authorization: Bearer <token>")
	fs.StringVar(&aggToken, "aggregatorToken", "", "token the aggregator sends to members (default: -httpToken)")
	fs.StringVar(&timestamps, "timestamps", "auto", "timestamp source: auto, ebpf, kernel or user")
	fs.BoolVar(&reflector, "ebpfReflector", true, "answer pings in the kernel (eBPF) when the ebpf time source is in use")
	fs.StringVar(&ifaces, "ifaces", "", "comma-separated interfaces for the eBPF programs (default: the interface holding -gossipAddr)")
	fs.StringVar(&probeKey, "probeKey", "", "base64 cluster probe key: pings and acks carry an HMAC and unauthenticated ones are dropped")
	fs.StringVar(&gossipKey, "gossipKey", "", "base64 memberlist encryption key (16, 24 or 32 bytes)")
	fs.StringVar(&nodeName, "nodeName", "", "cluster node name (default: hostname-gossipAddr)")
	fs.StringVar(&logLevel, "logLevel", "info", "log level: debug, info, warn or error")
	var scale scaleConfig
	addScaleFlags(fs, &scale)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: dnms [flags]            run an agent (sudo dnms -peer seed:33434)\n")
		fmt.Fprintf(out, "       dnms health -f FILE    rank links in a saved /v1/graph document\n")
		fmt.Fprintf(out, "       dnms version\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with -)", fs.Arg(0))
	}

	c := &config{
		Peer: peer, Aggregator: aggregator, HTTPAddr: httpAddr,
		MapInterval: mapIntv, PingPeerIntv: peerIntv, PingRouteIntv: routeIntv, PingTimeout: timeout,
		MetricRingSize: ringSize, HTTPAllowOrigin: allowOrigin, HTTPToken: httpToken,
		AggregatorToken: aggToken, Timestamps: timestamps, EBPFReflector: reflector,
		NodeName: nodeName, LogLevel: logLevel,
	}
	if c.AggregatorToken == "" {
		c.AggregatorToken = c.HTTPToken
	}
	if err := scale.validate(); err != nil {
		return nil, err
	}
	c.Scale = scale

	var err error
	if c.PingPort, err = port("-pingPort", pingPort); err != nil {
		return nil, err
	}
	if c.GossipPort, err = port("-gossipPort", gossipPort); err != nil {
		return nil, err
	}
	if portStart == 0 {
		portStart = pingPort + 1
	}
	if portEnd == 0 {
		portEnd = pingPort + 11
	}
	if c.MapSrcPortStart, err = port("-mapSrcPortStart", portStart); err != nil {
		return nil, err
	}
	if c.MapSrcPortEnd, err = port("-mapSrcPortEnd", portEnd); err != nil {
		return nil, err
	}
	if c.MapSrcPortEnd < c.MapSrcPortStart {
		return nil, fmt.Errorf("-mapSrcPortEnd %d is below -mapSrcPortStart %d", c.MapSrcPortEnd, c.MapSrcPortStart)
	}
	inRange := func(p uint16) bool { return p >= c.MapSrcPortStart && p <= c.MapSrcPortEnd }
	if inRange(c.PingPort) {
		return nil, fmt.Errorf("-pingPort %d overlaps the source port range %d-%d", c.PingPort, c.MapSrcPortStart, c.MapSrcPortEnd)
	}
	if inRange(c.GossipPort) {
		return nil, fmt.Errorf("-gossipPort %d overlaps the source port range %d-%d", c.GossipPort, c.MapSrcPortStart, c.MapSrcPortEnd)
	}
	if c.GossipPort == c.PingPort {
		return nil, fmt.Errorf("-gossipPort and -pingPort are both %d", c.PingPort)
	}

	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"-mapInterval", mapIntv}, {"-pingPeerInterval", peerIntv}, {"-pingRouteInterval", routeIntv}, {"-pingTimeout", timeout}} {
		if d.v <= 0 {
			return nil, fmt.Errorf("%s must be positive, got %s", d.name, d.v)
		}
	}
	if ringSize < 1 || ringSize > 1_000_000 {
		return nil, fmt.Errorf("-metricRingSize must be between 1 and 1000000, got %d", ringSize)
	}

	switch timestamps {
	case "auto", "ebpf", "kernel", "user":
	default:
		return nil, fmt.Errorf("-timestamps must be auto, ebpf, kernel or user, got %q", timestamps)
	}
	switch logLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("-logLevel must be debug, info, warn or error, got %q", logLevel)
	}

	if gossipAddr == "" {
		if c.GossipAddr, err = localIP(); err != nil {
			return nil, fmt.Errorf("-gossipAddr not set and no local IP found: %w", err)
		}
	} else if c.GossipAddr, err = netip.ParseAddr(gossipAddr); err != nil {
		return nil, fmt.Errorf("-gossipAddr %q is not an IP address", gossipAddr)
	}
	if c.GossipAddr.IsUnspecified() || c.GossipAddr.IsMulticast() {
		return nil, fmt.Errorf("-gossipAddr %s cannot be used to probe from", c.GossipAddr)
	}
	c.GossipAddr = c.GossipAddr.Unmap()

	if peer != "" {
		host, p, err := net.SplitHostPort(peer)
		if err != nil || host == "" {
			return nil, fmt.Errorf("-peer %q must be host:port", peer)
		}
		if _, err := port("-peer port", atoi(p)); err != nil {
			return nil, err
		}
	}
	if _, p, err := net.SplitHostPort(httpAddr); err != nil {
		return nil, fmt.Errorf("-httpAddr %q must be [host]:port", httpAddr)
	} else if _, err := port("-httpAddr port", atoi(p)); err != nil && p != "0" {
		return nil, err
	}

	if ifaces != "" {
		for _, s := range strings.Split(ifaces, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.Ifaces = append(c.Ifaces, s)
			}
		}
	}
	if c.ProbeKey, err = key("-probeKey", probeKey, nil); err != nil {
		return nil, err
	}
	if c.GossipKey, err = key("-gossipKey", gossipKey, []int{16, 24, 32}); err != nil {
		return nil, err
	}
	return c, nil
}

func port(name string, v int) (uint16, error) {
	if v < 1 || v > 65535 {
		return 0, fmt.Errorf("%s must be in 1-65535, got %d", name, v)
	}
	return uint16(v), nil
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func key(name, s string, sizes []int) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s is not valid base64: %w", name, err)
	}
	if len(b) == 0 {
		return nil, errors.New(name + " is empty")
	}
	if sizes == nil {
		if len(b) < 16 {
			return nil, fmt.Errorf("%s must be at least 16 bytes, got %d", name, len(b))
		}
		return b, nil
	}
	for _, n := range sizes {
		if len(b) == n {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%s must decode to 16, 24 or 32 bytes, got %d", name, len(b))
}
