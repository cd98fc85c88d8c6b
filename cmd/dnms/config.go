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

	"github.com/dnms/dnms/internal/cluster"
)

// config is everything the flags say. cmd/dnms is the only place that knows
// about flags; components get their own Config structs built from this.
type config struct {
	GossipAddr      netip.Addr // advertised and bound gossip address; also the probe address
	GossipPort      uint16
	Peer            string // seed host:port, "" = standalone
	Aggregator      bool
	HTTPAddr        string
	HTTPAdvertise   netip.Addr // where aggregators reach our API (in the node meta)
	PingPort        uint16
	MapInterval     time.Duration
	MapSrcPortStart uint16
	MapSrcPortEnd   uint16
	PingPeerIntv    time.Duration
	PingRouteIntv   time.Duration
	PingTimeout     time.Duration
	MetricRingSize  int
	SlowMinDelay    time.Duration // localization: least delay of a slow link
	BaselineWindow  time.Duration // localization: RTT baseline look-back
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
	// PrintConfig, when set, is the effective configuration as YAML
	// (-print-config): main prints it and exits.
	PrintConfig string

	// Trust and resilience (docs/security.md).
	ProbeKeyDerived bool                // ProbeKey came from GossipKey
	TLS             cluster.TLSFiles    // -tlsCAFile, -tlsCertFile, -tlsKeyFile
	ClusterTLS      *cluster.ClusterTLS // loaded TLS, nil without
	WebConfigFile   string              // -web.config.file
	HTTPMaxConns    int                 // -httpMaxConns
	StateDir        string              // -stateDir: "" writes nothing
	FailedGrace     time.Duration       // -failedPeerGrace

	// External targets and path watch (issue 12).
	TargetsFile string      // -targets: YAML file of external targets, "" = none
	PathHistory int         // -pathHistory: distinct paths and changes kept per flow
	Scale       scaleConfig // probe budget and metrics detail (scale.go)
}

// errHelp is returned when the user asked for -h; main exits 0.
var errHelp = flag.ErrHelp

// parseFlags turns argv into a validated config. It never starts anything:
// every error here is reported before any socket, eBPF program or goroutine
// exists.
func parseFlags(args []string, out io.Writer, localIP func() (netip.Addr, error)) (*config, error) {
	fromFile := map[string]string{} // flag name -> "FILE:LINE" it was set from
	c, err := parseFlagSet(args, out, localIP, fromFile)
	return c, blameConfigFile(err, fromFile)
}

func parseFlagSet(args []string, out io.Writer, localIP func() (netip.Addr, error), fromFile map[string]string) (*config, error) {
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
	httpAdvertise := fs.String("httpAdvertise", "", "IP address aggregators reach the API on, advertised to the cluster (default: the host of -httpAddr when it names one, else -gossipAddr)")
	fs.IntVar(&pingPort, "pingPort", 33435, "UDP port that receives pings, trace probes and acks")
	fs.DurationVar(&mapIntv, "mapInterval", time.Second, "pause between traces inside one sweep")
	fs.IntVar(&portStart, "mapSrcPortStart", 0, "first UDP source port swept for ECMP paths (default pingPort+1)")
	fs.IntVar(&portEnd, "mapSrcPortEnd", 0, "last UDP source port swept for ECMP paths (default pingPort+11)")
	fs.DurationVar(&peerIntv, "pingPeerInterval", 100*time.Millisecond, "how often the pinger visits each peer")
	fs.DurationVar(&routeIntv, "pingRouteInterval", time.Second, "how often each route is pinged: each distinct (forward, reverse) route pair to a peer, its source ports taking turns (each peer and source port with -pingEveryPort)")
	fs.DurationVar(&timeout, "pingTimeout", time.Second, "a ping without an ack after this long is lost")
	fs.IntVar(&ringSize, "metricRingSize", 100, "samples kept per route for loss, latency and jitter")
	fs.StringVar(&allowOrigin, "httpAllowOrigin", "*", "Access-Control-Allow-Origin on every HTTP response")
	fs.StringVar(&httpToken, "httpToken", "", "when set, every endpoint but /healthz and the web page (/, /ui/) requires Authorization: Bearer <token>")
	fs.StringVar(&aggToken, "aggregatorToken", "", "token the aggregator sends to members (default: -httpToken)")
	fs.StringVar(&timestamps, "timestamps", "auto", "timestamp source: auto, ebpf, kernel or user")
	fs.BoolVar(&reflector, "ebpfReflector", true, "answer pings in the kernel (eBPF) when the ebpf time source is in use")
	fs.StringVar(&ifaces, "ifaces", "", "comma-separated interfaces for the eBPF programs (default: every interface carrying a default route, followed as links and routes change)")
	fs.StringVar(&probeKey, "probeKey", "", "base64 cluster probe key: pings and acks carry an HMAC and unauthenticated ones are dropped (default: derived from -gossipKey; with neither, probes are UNAUTHENTICATED and acks can be forged)")
	fs.StringVar(&gossipKey, "gossipKey", "", "base64 memberlist encryption key (16, 24 or 32 bytes)")
	fs.StringVar(&nodeName, "nodeName", "", "cluster node name (default: hostname-gossipAddr)")
	fs.StringVar(&logLevel, "logLevel", "info", "log level: debug, info, warn or error")
	// Localization (issue 14).
	slowMin := fs.Duration("slowMinDelay", 100*time.Microsecond, "least one-way delay the estimator attributes to a link before calling it slow")
	baseWin := fs.Duration("baselineWindow", 10*time.Minute, "how far back a flow's RTT baseline (its lowest ring 10th percentile) looks")
	configPath := fs.String("config", "", "YAML `file` with one key per flag (same names); flags on the command line win")
	printCfg := fs.Bool("print-config", false, "print the effective configuration as YAML (a valid -config file) and exit")
	var sec config
	fs.StringVar(&sec.TLS.CA, "tlsCAFile", "", "cluster CA (PEM): members' APIs serve -tlsCertFile and the aggregator trusts only members with a certificate from this CA naming them (mTLS)")
	fs.StringVar(&sec.TLS.Cert, "tlsCertFile", "", "this node's certificate (PEM), signed by -tlsCAFile, naming -nodeName (CN or DNS SAN) and -gossipAddr (IP SAN)")
	fs.StringVar(&sec.TLS.Key, "tlsKeyFile", "", "key of -tlsCertFile (PEM)")
	fs.StringVar(&sec.WebConfigFile, "web.config.file", "", "Prometheus exporter-toolkit web config (TLS, client CA, basic auth) for the HTTP API")
	fs.IntVar(&sec.HTTPMaxConns, "httpMaxConns", 1024, "maximum open HTTP connections; more wait in the accept queue")
	fs.StringVar(&sec.StateDir, "stateDir", "", "`dir`ectory for state kept across restarts (known members, path history); empty writes nothing to disk")
	fs.DurationVar(&sec.FailedGrace, "failedPeerGrace", 2*time.Minute, "how long a peer that gossip declares dead (it did not announce a leave) is still probed and merged; 0 forgets it at once")
	var scale scaleConfig
	addScaleFlags(fs, &scale)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: dnms [flags]            run an agent (sudo dnms -peer seed:33434)\n")
		fmt.Fprintf(out, "       dnms health -f FILE    rank links in a saved /v1/graph document\n")
		fmt.Fprintf(out, "       dnms version\n\nflags:\n")
		fs.PrintDefaults()
	}
	var targetsFile string
	var pathHistory int
	fs.StringVar(&targetsFile, "targets", "", "YAML `file` of external targets to probe (icmp, tcp, udp); reloaded on SIGHUP and on change")
	fs.IntVar(&pathHistory, "pathHistory", 10, "distinct paths and path changes kept per traced flow")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with -)", fs.Arg(0))
	}
	if *configPath != "" {
		if err := applyConfigFile(fs, *configPath, fromFile); err != nil {
			return nil, err
		}
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
	if *slowMin <= 0 || *baseWin <= 0 {
		return nil, fmt.Errorf("-slowMinDelay %s and -baselineWindow %s must be positive", *slowMin, *baseWin)
	}
	c.SlowMinDelay, c.BaselineWindow = *slowMin, *baseWin
	c.TargetsFile, c.PathHistory = targetsFile, pathHistory
	if pathHistory < 1 || pathHistory > 10000 {
		return nil, fmt.Errorf("-pathHistory must be between 1 and 10000, got %d", pathHistory)
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

	if c.HTTPAdvertise, err = advertiseAddr(*httpAdvertise, httpAddr, c.GossipAddr); err != nil {
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
	if err := c.security(sec); err != nil {
		return nil, err
	}
	if *printCfg {
		// Show the values derived from others, not the empty defaults.
		for name, v := range map[string]string{
			"gossipAddr": c.GossipAddr.String(), "httpAdvertise": c.HTTPAdvertise.String(),
			"mapSrcPortStart": strconv.Itoa(int(c.MapSrcPortStart)), "mapSrcPortEnd": strconv.Itoa(int(c.MapSrcPortEnd)),
			"aggregatorToken": c.AggregatorToken,
		} {
			fs.Set(name, v)
		}
		c.PrintConfig = printConfig(fs)
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

// advertiseAddr is -httpAdvertise, or the host -httpAddr listens on when it
// names one address, or the gossip address (the API listens on all of them).
func advertiseAddr(flagVal, httpAddr string, gossip netip.Addr) (netip.Addr, error) {
	if flagVal != "" {
		a, err := netip.ParseAddr(flagVal)
		if err != nil || a.IsUnspecified() || a.IsMulticast() {
			return netip.Addr{}, fmt.Errorf("-httpAdvertise %q must be a unicast IP address", flagVal)
		}
		return a.Unmap(), nil
	}
	host, _, _ := net.SplitHostPort(httpAddr)
	if host == "" {
		return gossip, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("-httpAddr host %q is not an IP address: set -httpAdvertise to the address aggregators should use", host)
	}
	if a.IsUnspecified() {
		return gossip, nil
	}
	return a.Unmap(), nil
}
