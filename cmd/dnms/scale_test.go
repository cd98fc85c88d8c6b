package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestScaleFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	want := scaleConfig{PingPeers: 64, PeerRotate: 10 * time.Minute, ProbeRate: 1000, TraceRate: 50, TraceRouterRate: 500, MetricsDetail: "peer", AggregateInterval: 5 * time.Second}
	if c.Scale != want {
		t.Errorf("defaults %+v, want %+v", c.Scale, want)
	}
	c, err = parseFlags([]string{"-pingPeers", "0", "-metricsDetail", "route", "-traceRate", "5", "-aggregateInterval", "0", "-pingEveryPort"}, io.Discard, fixedIP)
	if err != nil || c.Scale.PingPeers != 0 || c.Scale.MetricsDetail != "route" || c.Scale.TraceRate != 5 || c.Scale.AggregateInterval != 0 || !c.Scale.PingEveryPort {
		t.Errorf("parsed %+v, %v", c.Scale, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-pingPeers", "-1"}, "-pingPeers must be 0"},
		{[]string{"-peerRotate", "0s"}, "-peerRotate must be positive"},
		{[]string{"-probeRate", "0"}, "-probeRate must be positive"},
		{[]string{"-traceRate", "-3"}, "-traceRate must be positive"},
		{[]string{"-traceRouterRate", "0"}, "-traceRouterRate must be positive"},
		{[]string{"-metricsDetail", "flow"}, "-metricsDetail must be peer or route"},
		{[]string{"-aggregateInterval", "10ms"}, "-aggregateInterval must be 0 or between 100ms and 1h"},
		{[]string{"-aggregateInterval", "-5s"}, "-aggregateInterval must be 0 or between 100ms and 1h"},
	} {
		if _, err := parseFlags(tc.args, io.Discard, fixedIP); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}
