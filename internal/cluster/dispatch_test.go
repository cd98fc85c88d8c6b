package cluster

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
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
	leaving := good
	leaving.Leaving = true
	firstLeaving := first
	firstLeaving.Leaving = true
	ip := net.IPv4(198, 18, 1, 1)
	ev := func(k evKind, name string, m []byte) rawEvent {
		return rawEvent{kind: k, name: name, addr: ip, port: 33434, meta: m}
	}
	for _, tc := range []struct {
		name      string
		in        []rawEvent
		want      []string // what a self-excluding handler sees
		reachable []bool   // Config.Reachable's answers in turn (nil: unset)
	}{
		{"join then leave", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(leaving)), ev(evLeave, "b", nil)}, []string{"join b", "leave b"}, nil},
		{"failure waits for the grace", []rawEvent{ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil)}, []string{"join b"}, nil},
		{"failure then grace ends", []rawEvent{ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil), {kind: evExpire, name: "b", gen: 1}}, []string{"join b", "leave b"}, nil},
		{"failed member back before the grace ends", []rawEvent{ev(evJoin, "b", meta(first)), ev(evLeave, "b", nil), ev(evJoin, "b", meta(first)), {kind: evExpire, name: "b", gen: 1}}, []string{"join b"}, nil},
		{"failed member restarted in its grace", []rawEvent{ev(evJoin, "b", meta(first)), ev(evLeave, "b", nil), ev(evJoin, "b", meta(second))}, []string{"join b", "restart b"}, nil},
		{"failed and answering nowhere leaves at once", []rawEvent{ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil)}, []string{"join b", "leave b"}, []bool{false}},
		{"failed, answering, then not", []rawEvent{ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil), {kind: evExpire, name: "b", gen: 1}, {kind: evExpire, name: "b", gen: 1}},
			[]string{"join b", "leave b"}, []bool{true, true, false}},
		{"failed, still answering", []rawEvent{ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil), {kind: evExpire, name: "b", gen: 1}}, []string{"join b"}, []bool{true, true}},
		{"stale grace timer of an earlier failure", []rawEvent{ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil), ev(evJoin, "b", meta(good)), ev(evLeave, "b", nil), {kind: evExpire, name: "b", gen: 1}}, []string{"join b"}, nil},
		{"self is not reported", []rawEvent{ev(evJoin, "self", meta(good))}, nil, nil},
		{"duplicate join", []rawEvent{ev(evJoin, "b", meta(good)), ev(evJoin, "b", meta(good))}, []string{"join b"}, nil},
		{"update without change", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(good))}, []string{"join b"}, nil},
		{"version-only update is silent", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(newVersion))}, []string{"join b"}, nil},
		{"port change re-reports", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(newHTTP))}, []string{"join b", "leave b", "join b"}, nil},
		{"becomes incompatible", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(badPing))}, []string{"join b", "leave b"}, nil},
		{"becomes compatible", []rawEvent{ev(evJoin, "b", meta(badPing)), ev(evUpdate, "b", meta(good))}, []string{"join b"}, nil},
		{"restart: new instance", []rawEvent{ev(evJoin, "b", meta(first)), ev(evUpdate, "b", meta(second))}, []string{"join b", "restart b"}, nil},
		{"same instance is no restart", []rawEvent{ev(evJoin, "b", meta(first)), ev(evUpdate, "b", meta(first))}, []string{"join b"}, nil},
		{"instance first advertised is no restart", []rawEvent{ev(evJoin, "b", meta(good)), ev(evUpdate, "b", meta(first))}, []string{"join b"}, nil},
		{"restart seen as leave and join", []rawEvent{ev(evJoin, "b", meta(first)), ev(evUpdate, "b", meta(firstLeaving)), ev(evLeave, "b", nil), ev(evJoin, "b", meta(second))}, []string{"join b", "leave b", "join b"}, nil},
		{"restart with a port change re-reports", []rawEvent{ev(evJoin, "b", meta(first)), ev(evUpdate, "b", meta(NodeMeta{Role: RoleAgent, HTTPPort: 8080, PingPort: 33435, Instance: 2000}))}, []string{"join b", "leave b", "join b"}, nil},
		{"garbage meta", []rawEvent{ev(evJoin, "b", []byte{9, 9, 9})}, nil, nil},
		{"leave of unknown", []rawEvent{ev(evLeave, "zz", nil)}, nil, nil},
		{"bad address", []rawEvent{{kind: evJoin, name: "b", addr: net.IP{1, 2}, meta: meta(good)}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeName = "self"
			cfg.AdvertiseAddr = loopback
			cfg.Version = "v1.0.0"
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			if strings.Contains(tc.name, "grace ends") {
				cfg.FailedGrace = time.Nanosecond
			}
			if tc.reachable != nil {
				cfg.FailedGrace = time.Hour
				cfg.Reachable = func(Peer) bool {
					if len(tc.reachable) == 0 {
						t.Fatal("Reachable asked more often than expected")
					}
					r := tc.reachable[0]
					tc.reachable = tc.reachable[1:]
					return r
				}
			}
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

// TestDispatchBatch: a batch of events queued together (a join storm) is
// delivered in order; Members follows every event (a handler told of its
// j-th join sees j members), the member gauge and the state file follow
// once, after the batch (no state file is written while it is delivered).
func TestDispatchBatch(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.AdvertiseAddr, cfg.Version = "self", loopback, "v1.0.0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.StateDir = t.TempDir()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.0.0"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	h := &batchSeer{c: c}
	c.handlers = []handlerEntry{{h: h}}
	for i := range n {
		c.q.items = append(c.q.items, rawEvent{kind: evJoin, name: fmt.Sprintf("m%03d", i), addr: net.IPv4(198, 18, byte(i/250), byte(i%250+1)), port: 33434, meta: meta})
	}
	go c.dispatch()
	c.q.wake()
	eventually(t, 10*time.Second, "all members published", func() (bool, string) {
		return len(c.Members()) == n, fmt.Sprint(len(c.Members()))
	})
	c.stopDispatch()
	<-c.done
	if h.joins != n || h.wrongMembers != 0 || h.sawState {
		t.Fatalf("handler: %d joins, %d of them with Members not that many long, a state file during the batch %v; want %d, 0, false",
			h.joins, h.wrongMembers, h.sawState, n)
	}
	ms := c.Members()
	if !slices.IsSortedFunc(ms, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) }) || ms[0].Name != "m000" {
		t.Fatalf("members not sorted by name: %v...", ms[:3])
	}
	if got := testutil.ToFloat64(c.met.members.WithLabelValues(RoleAgent)); got != n {
		t.Fatalf("members gauge %v, want %d", got, n)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.StateDir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := parseState(raw, "self"); err != nil || len(got) != n {
		t.Fatalf("state file lists %d members (%v), want %d", len(got), err, n)
	}
}

// batchSeer records what a handler sees of Members and the state file.
type batchSeer struct {
	c            *Cluster
	joins        int
	wrongMembers int
	sawState     bool
}

func (h *batchSeer) PeerJoin(Peer) {
	h.joins++
	if len(h.c.Members()) != h.joins {
		h.wrongMembers++
	}
	_, err := os.Stat(filepath.Join(h.c.cfg.StateDir, stateFile))
	h.sawState = h.sawState || err == nil
}
func (h *batchSeer) PeerLeave(Peer) {}
