package main

import (
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestScaleGossip(t *testing.T) {
	lan := memberlist.DefaultLANConfig()
	mc := memberlist.DefaultLANConfig()
	scaleGossip(1)(mc)
	if mc.GossipInterval != lan.GossipInterval || mc.ProbeInterval != lan.ProbeInterval || mc.PushPullInterval != lan.PushPullInterval {
		t.Fatalf("scale 1 changed the LAN timings: %v %v %v", mc.GossipInterval, mc.ProbeInterval, mc.PushPullInterval)
	}
	scaleGossip(10)(mc)
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"GossipInterval", mc.GossipInterval, lan.GossipInterval},
		{"ProbeInterval", mc.ProbeInterval, 10 * lan.ProbeInterval},
		{"ProbeTimeout", mc.ProbeTimeout, 10 * lan.ProbeTimeout},
		{"PushPullInterval", mc.PushPullInterval, 10 * lan.PushPullInterval},
		{"TCPTimeout", mc.TCPTimeout, 10 * lan.TCPTimeout},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if mc.SuspicionMult != lan.SuspicionMult || mc.GossipNodes != lan.GossipNodes {
		t.Errorf("counts changed: suspicion mult %d, gossip nodes %d", mc.SuspicionMult, mc.GossipNodes)
	}
}

func TestPct(t *testing.T) {
	ds := []time.Duration{1 * time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 3 * time.Second}, {0.99, 4 * time.Second}, {1, 4 * time.Second}} {
		if got := pct(ds, c.q); got != c.want {
			t.Errorf("pct(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if pct(nil, 0.5) != 0 {
		t.Error("pct of nothing is not 0")
	}
}

func TestTuneGossip(t *testing.T) {
	lan := memberlist.DefaultLANConfig()
	mc := memberlist.DefaultLANConfig()
	tuneGossip(1, true, 0)(mc)
	if !mc.EnableCompression || mc.ProbeInterval != lan.ProbeInterval {
		t.Fatalf("defaults changed: compression %v, probe interval %v", mc.EnableCompression, mc.ProbeInterval)
	}
	tuneGossip(2, false, 0)(mc)
	if mc.EnableCompression || mc.ProbeInterval != 2*lan.ProbeInterval || mc.PushPullInterval != 2*lan.PushPullInterval {
		t.Fatalf("-liveCompress=false -gossipScale 2: compression %v, probe interval %v, push-pull %v", mc.EnableCompression, mc.ProbeInterval, mc.PushPullInterval)
	}
	mc = memberlist.DefaultLANConfig()
	tuneGossip(20, true, time.Minute)(mc)
	if mc.PushPullInterval != time.Minute || mc.ProbeInterval != 20*lan.ProbeInterval {
		t.Fatalf("-livePushPull 1m -gossipScale 20: push-pull %v, probe interval %v", mc.PushPullInterval, mc.ProbeInterval)
	}
}
