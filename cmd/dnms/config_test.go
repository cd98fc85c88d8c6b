package main

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func fixedIP() (netip.Addr, error) { return netip.MustParseAddr("198.18.0.10"), nil }

func TestParseFlagsDefaults(t *testing.T) {
	c, err := parseFlags(nil, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		GossipAddr: netip.MustParseAddr("198.18.0.10"), GossipPort: 33434, HTTPAddr: ":12345",
		PingPort: 33435, MapInterval: time.Second, MapSrcPortStart: 33436, MapSrcPortEnd: 33446,
		PingPeerIntv: 100 * time.Millisecond, PingRouteIntv: time.Second, PingTimeout: time.Second,
		MetricRingSize: 100, HTTPAllowOrigin: "*", Timestamps: "auto", EBPFReflector: true, LogLevel: "info",
	}
	got := *c
	if got.GossipAddr != want.GossipAddr || got.GossipPort != want.GossipPort || got.HTTPAddr != want.HTTPAddr ||
		got.PingPort != want.PingPort || got.MapInterval != want.MapInterval ||
		got.MapSrcPortStart != want.MapSrcPortStart || got.MapSrcPortEnd != want.MapSrcPortEnd ||
		got.PingPeerIntv != want.PingPeerIntv || got.PingRouteIntv != want.PingRouteIntv ||
		got.PingTimeout != want.PingTimeout || got.MetricRingSize != want.MetricRingSize ||
		got.HTTPAllowOrigin != want.HTTPAllowOrigin || got.Timestamps != want.Timestamps ||
		got.EBPFReflector != want.EBPFReflector || got.Peer != "" || got.Aggregator {
		t.Fatalf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseFlagsDerived(t *testing.T) {
	c, err := parseFlags([]string{"-pingPort", "40000", "-httpToken", "s3cret"}, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	if c.MapSrcPortStart != 40001 || c.MapSrcPortEnd != 40011 {
		t.Errorf("port range follows -pingPort: got %d-%d", c.MapSrcPortStart, c.MapSrcPortEnd)
	}
	if c.AggregatorToken != "s3cret" {
		t.Errorf("-aggregatorToken defaults to -httpToken, got %q", c.AggregatorToken)
	}
}

func TestHTTPAdvertise(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "198.18.0.10"}, // API on every address: the gossip address
		{[]string{"-httpAddr", "0.0.0.0:9000"}, "198.18.0.10"}, // same
		{[]string{"-httpAddr", "198.18.5.5:9000"}, "198.18.5.5"},
		{[]string{"-httpAddr", "[fd00::5]:9000"}, "fd00::5"},
		{[]string{"-httpAddr", "198.18.5.5:9000", "-httpAdvertise", "198.18.6.6"}, "198.18.6.6"},
	} {
		c, err := parseFlags(tc.args, io.Discard, fixedIP)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.HTTPAdvertise.String() != tc.want {
			t.Errorf("%v: -httpAdvertise %s, want %s", tc.args, c.HTTPAdvertise, tc.want)
		}
	}
}

func TestParseFlagsRejects(t *testing.T) {
	noIP := func() (netip.Addr, error) { return netip.Addr{}, errors.New("no default route") }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-pingPort", "33440", "-mapSrcPortStart", "33436", "-mapSrcPortEnd", "33446"}, "-pingPort 33440 overlaps the source port range"},
		{[]string{"-mapSrcPortStart", "33430", "-mapSrcPortEnd", "33440"}, "overlaps"},
		{[]string{"-pingPort", "0"}, "-pingPort must be in 1-65535"},
		{[]string{"-pingPort", "70000"}, "-pingPort must be in 1-65535"},
		{[]string{"-mapSrcPortEnd", "65536"}, "-mapSrcPortEnd must be in 1-65535"},
		{[]string{"-mapSrcPortStart", "40010", "-mapSrcPortEnd", "40000"}, "is below"},
		{[]string{"-gossipPort", "33440"}, "-gossipPort 33440 overlaps"},
		{[]string{"-gossipPort", "33435", "-mapSrcPortStart", "40000", "-mapSrcPortEnd", "40010"}, "both 33435"},
		{[]string{"-mapInterval", "0s"}, "-mapInterval must be positive"},
		{[]string{"-pingTimeout", "-1s"}, "-pingTimeout must be positive"},
		{[]string{"-pingPeerInterval", "0"}, "-pingPeerInterval must be positive"},
		{[]string{"-pingRouteInterval", "0"}, "-pingRouteInterval must be positive"},
		{[]string{"-metricRingSize", "0"}, "-metricRingSize"},
		{[]string{"-slowMinDelay", "0s"}, "-slowMinDelay"},
		{[]string{"-baselineWindow", "-1m"}, "-baselineWindow"},
		{[]string{"-gossipAddr", "not-an-ip"}, "is not an IP address"},
		{[]string{"-gossipAddr", "0.0.0.0"}, "cannot be used"},
		{[]string{"-peer", "seed"}, "must be host:port"},
		{[]string{"-peer", "seed:0"}, "-peer port"},
		{[]string{"-httpAddr", "12345"}, "must be [host]:port"},
		{[]string{"-timestamps", "gps"}, "-timestamps must be"},
		{[]string{"-gossipKey", "!!"}, "not valid base64"},
		{[]string{"-gossipKey", "AAAA"}, "16, 24 or 32 bytes"},
		{[]string{"-probeKey", "AAAA"}, "at least 16 bytes"},
		{[]string{"-httpMaxConns", "0"}, "-httpMaxConns must be at least 1"},
		{[]string{"-tlsCAFile", "/nonexistent"}, "must be set together"},
		{[]string{"-tlsCAFile", "/nonexistent", "-tlsCertFile", "/x", "-tlsKeyFile", "/y"}, "-tlsCAFile"},
		{[]string{"-web.config.file", "/nonexistent.yml"}, "-web.config.file"},
		{[]string{"-logLevel", "loud"}, "-logLevel"},
		{[]string{"-httpAdvertise", "0.0.0.0"}, "-httpAdvertise"},
		{[]string{"-httpAdvertise", "mgmt"}, "-httpAdvertise"},
		{[]string{"-httpAddr", "localhost:9000"}, "set -httpAdvertise"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"-nosuchflag"}, "flag provided but not defined"},
	} {
		_, err := parseFlags(tc.args, io.Discard, fixedIP)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want error containing %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseFlags(nil, io.Discard, noIP); err == nil || !strings.Contains(err.Error(), "no local IP") {
		t.Errorf("no local IP: got %v", err)
	}
}
