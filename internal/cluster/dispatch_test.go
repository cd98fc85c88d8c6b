package cluster

import (
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
)

// TestDispatchRules drives the dispatcher's decisions directly with the
// callbacks memberlist would make.
func TestDispatchRules(t *testing.T) {
	meta := func(m NodeMeta) []byte {
		t.Helper()
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.0.0"}
	newHTTP := good
	newHTTP.HTTPPort = 8080
	newVersion := good
	newVersion.Version = "v1.1.0"
	badPing := good
	badPing.PingPort = 1
	first := good
	first.Instance = 1000
	second := first
	second.Instance = 2000
	ip := net.IPv4(198, 18, 1, 1)
	ev := func(k evKind, name string, m []byte) rawEvent {
		return rawEvent{kind: k, name: name, addr: ip, port: 33434, meta: m}
	}
	for _, tc := range []struct {
		name string
		in   []rawEvent
		want []string // what a self-excluding handler sees
	}{
		{"join then leave", []rawEvent{ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil)}, []string{"join b", "leave b"}},
		{"self is not reported", []rawEvent{ev(evJoin, "self", meta(good))}, nil},
		{"duplicate join", []rawEvent{ev(evJoin, "b", meta(good)), ev(evJoin, "b", meta(good))}, []string{"join b"}},
		{"update without change", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(good))}, []string{"join b"}},
		{"version-only update is silent", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(newVersion))}, []string{"join b"}},
		{"port change re-reports", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(newHTTP))}, []string{"join b", "leave b", "join b"}},
		{"becomes incompatible", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(badPing))}, []string{"join b", "leave b"}},
		{"becomes compatible", []rawEvent{ev(evJoin, "b", meta(badPing)), ev(evUpdate, "b", meta(good))}, []string{"join b"}},
		{"restart: new instance", []rawEvent{ev(evJoin, "b", meta(first)), ev(evUpdate, "b", meta(second))}, []string{"join b", "restart b"}},
		{"same instance is no restart", []rawEvent{ev(evJoin, "b", meta(first)), ev(evUpdate, "b", meta(first))}, []string{"join b"}},
		{"instance first advertised is no restart", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(first))}, []string{"join b"}},
		{"restart seen as leave and join", []rawEvent{ev(evJoin, "b", meta(first)), ev(evLeave, "b", nil), ev(evJoin, "b", meta(second))}, []string{"join b", "leave b", "join b"}},
		{"restart with a port change re-reports", []rawEvent{ev(evJoin, "b", meta(first)), ev(evUpdate, "b", meta(NodeMeta{Role: RoleAgent, HTTPPort: 8080, PingPort: 33435, Instance: 2000}))}, []string{"join b", "leave b", "join b"}},
		{"garbage meta", []rawEvent{ev(evJoin, "b", []byte{9, 9, 9})}, nil},
		{"leave of unknown", []rawEvent{ev(evLeave, "zz", nil)}, nil},
		{"bad address", []rawEvent{{kind: evJoin, name: "b", addr: net.IP{1, 2}, meta: meta(good)}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeName = "self"
			cfg.AdvertiseAddr = loopback
			cfg.Version = "v1.0.0"
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := restartRecorder{newRecorder()}
			c.handlers = []handlerEntry{{h: r}}
			for _, e := range tc.in {
				c.handle(e)
			}
			got, _ := r.snapshot()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("handler saw %v, want %v", got, tc.want)
			}
		})
	}
}

// restartRecorder also records PeerRestart.
type restartRecorder struct{ *recorder }

func (r restartRecorder) PeerRestart(p Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "restart "+p.Name)
}
