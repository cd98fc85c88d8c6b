package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// recorder is a Handler that keeps what it was told.
type recorder struct {
	mu     sync.Mutex
	events []string // "join name" / "leave name"
	peers  map[string]Peer
}

func newRecorder() *recorder { return &recorder{peers: map[string]Peer{}} }

func (r *recorder) PeerJoin(p Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "join "+p.Name)
	r.peers[p.Name] = p
}

func (r *recorder) PeerLeave(p Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "leave "+p.Name)
	delete(r.peers, p.Name)
}

func (r *recorder) snapshot() ([]string, map[string]Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]Peer, len(r.peers))
	for k, v := range r.peers {
		m[k] = v
	}
	return slices.Clone(r.events), m
}

func (r *recorder) names() []string {
	_, m := r.snapshot()
	var n []string
	for k := range m {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// eventually polls cond until it is true or the deadline passes, then fails
// with what was last seen.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v; last seen: %s", what, timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fastTimings makes failure detection take a few seconds, with some slack
// for a loaded 2-core machine.
func fastTimings(mc *memberlist.Config) {
	mc.ProbeInterval = 400 * time.Millisecond
	mc.ProbeTimeout = 300 * time.Millisecond
	mc.SuspicionMult = 3
	mc.GossipInterval = 50 * time.Millisecond
	mc.PushPullInterval = 2 * time.Second
	mc.TCPTimeout = 2 * time.Second
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type nodeOpt func(*Config)

// startNode starts a node on 127.0.0.1 with its own port and runs it until
// the test ends.
func startNode(t *testing.T, name string, opts ...nodeOpt) (*Cluster, context.CancelFunc) {
	t.Helper()
	c := newNode(t, name, opts...)
	if err := c.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return runNode(t, c)
}

// newNode is a node as startNode makes it, not started.
func newNode(t *testing.T, name string, opts ...nodeOpt) *Cluster {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = loopback
	cfg.AdvertiseAddr = loopback
	cfg.Port = 0
	cfg.Version = "v1.0.0"
	cfg.JoinBackoffMin = 100 * time.Millisecond
	cfg.JoinBackoffMax = time.Second
	cfg.LeaveTimeout = time.Second
	cfg.Logger = testLogger(t)
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Tune = fastTimings
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("new %s: %v", name, err)
	}
	return c
}

// runNode runs a started node until the returned stop (also a cleanup).
func runNode(t *testing.T, c *Cluster) (*Cluster, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("run %s: %v", c.Name(), err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("run %s did not return after cancel", c.Name())
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

func seeds(cs ...*Cluster) nodeOpt {
	return func(c *Config) {
		for _, s := range cs {
			c.Seeds = append(c.Seeds, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())))
		}
	}
}

func memberNames(c *Cluster) []string {
	var n []string
	for _, p := range c.Members() {
		n = append(n, p.Name)
	}
	slices.Sort(n)
	return n
}

func TestJoinAndLeave(t *testing.T) {
	const grace = 2 * time.Second
	a, _ := startNode(t, "a", func(c *Config) { c.Role, c.FailedGrace = RoleAggregator, grace })
	ra, raSelf := newRecorder(), newRecorder()
	a.AddHandler(ra)
	a.AddHandlerWithSelf(raSelf)

	b, stopB := startNode(t, "b", seeds(a))
	c, _ := startNode(t, "c", seeds(a))
	rc := newRecorder()
	c.AddHandler(rc) // registered after start: replays what c knows

	eventually(t, 15*time.Second, "a's handler sees b and c", func() (bool, string) {
		n := ra.names()
		return slices.Equal(n, []string{"b", "c"}), fmt.Sprint(n)
	})
	eventually(t, 15*time.Second, "self-including handler sees a, b, c", func() (bool, string) {
		n := raSelf.names()
		return slices.Equal(n, []string{"a", "b", "c"}), fmt.Sprint(n)
	})
	eventually(t, 15*time.Second, "c's late handler sees a and b", func() (bool, string) {
		n := rc.names()
		return slices.Equal(n, []string{"a", "b"}), fmt.Sprint(n)
	})
	for _, n := range []*Cluster{a, b, c} {
		eventually(t, 15*time.Second, n.Name()+".Members includes everyone", func() (bool, string) {
			m := memberNames(n)
			return slices.Equal(m, []string{"a", "b", "c"}), fmt.Sprint(m)
		})
	}
	_, peers := ra.snapshot()
	if p := peers["b"]; p.Addr != loopback || p.Role != RoleAgent || p.HTTPPort != 12345 || p.PingPort != 33435 || p.Version != "v1.0.0" || int(p.GossipPort) != b.Port() {
		t.Fatalf("peer b as seen by a: %+v", p)
	}
	_, cpeers := rc.snapshot()
	if cpeers["a"].Role != RoleAggregator {
		t.Fatalf("a's role as seen by c: %+v", cpeers["a"])
	}

	// Graceful: Run's ctx ends → leave broadcast.
	start := time.Now()
	stopB()
	eventually(t, 15*time.Second, "a sees b leave", func() (bool, string) {
		ev, _ := ra.snapshot()
		return slices.Contains(ev, "leave b"), fmt.Sprint(ev)
	})
	t.Logf("graceful leave reported after %v (includes the leave broadcast wait)", time.Since(start).Round(time.Millisecond))
	// Abrupt: no leave; failure detection must notice, and the member is
	// still reported (marked failed) until the grace ends.
	start = time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatalf("shutdown c: %v", err)
	}
	var failedAt time.Time
	eventually(t, 30*time.Second, "a marks c failed", func() (bool, string) {
		for _, p := range a.Members() {
			if p.Name == "c" && p.Failed {
				failedAt = time.Now()
				return true, ""
			}
		}
		return false, fmt.Sprint(a.Members())
	})
	if ev, _ := ra.snapshot(); slices.Contains(ev, "leave c") {
		t.Fatalf("c reported gone while in its grace: %v", ev)
	}
	t.Logf("failure detected after %v (probe interval 400ms, suspicion mult 3)", failedAt.Sub(start).Round(time.Millisecond))
	eventually(t, 30*time.Second, "a forgets c after the grace", func() (bool, string) {
		ev, _ := ra.snapshot()
		return slices.Contains(ev, "leave c"), fmt.Sprint(ev)
	})
	if d := time.Since(failedAt); d < grace-100*time.Millisecond {
		t.Fatalf("c forgotten %v after it failed, before the %v grace", d, grace)
	}
	ev, _ := ra.snapshot()
	// Every join precedes its leave, and nothing is reported twice.
	for _, n := range []string{"b", "c"} {
		j, l := slices.Index(ev, "join "+n), slices.Index(ev, "leave "+n)
		if j < 0 || l < j {
			t.Fatalf("events out of order for %s: %v", n, ev)
		}
	}
	if len(ev) != 4 {
		t.Fatalf("want exactly 2 joins and 2 leaves, got %v", ev)
	}
	if m := memberNames(a); !slices.Equal(m, []string{"a"}) {
		t.Fatalf("a.Members after both left: %v", m)
	}
	if got := testutil.ToFloat64(a.met.members.WithLabelValues(RoleAgent)); got != 0 {
		t.Fatalf("dnms_cluster_members{role=agent} = %v, want 0", got)
	}
	if got := testutil.ToFloat64(a.met.members.WithLabelValues(RoleAggregator)); got != 1 {
		t.Fatalf("dnms_cluster_members{role=aggregator} = %v, want 1 (self)", got)
	}
}

// freePort finds a port free for both UDP and TCP on loopback.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func TestSeedComesUpLater(t *testing.T) {
	port := freePort(t)
	seed := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b, _ := startNode(t, "b", func(c *Config) { c.Seeds = []string{seed} })
	rb := newRecorder()
	b.AddHandler(rb)
	// b is retrying; the seed appears afterwards.
	eventually(t, 10*time.Second, "b tried and failed twice", func() (bool, string) {
		n := b.joinAttempts.Load()
		return n >= 2, fmt.Sprintf("%d attempts", n)
	})
	a, _ := startNode(t, "a", func(c *Config) { c.Port = port })
	ra := newRecorder()
	a.AddHandler(ra)
	eventually(t, 20*time.Second, "b joins the late seed", func() (bool, string) {
		return slices.Equal(rb.names(), []string{"a"}) && slices.Equal(ra.names(), []string{"b"}),
			fmt.Sprint(rb.names(), ra.names())
	})
}

func TestGossipKeyMismatch(t *testing.T) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	rand.Read(k1)
	rand.Read(k2)
	a, _ := startNode(t, "a", func(c *Config) { c.GossipKey = k1 })
	ra := newRecorder()
	a.AddHandler(ra)

	b, _ := startNode(t, "b", func(c *Config) { c.GossipKey = k2 })
	if n, err := b.Join([]string{net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port()))}); err == nil {
		t.Fatalf("join with the wrong key succeeded (%d contacted)", n)
	}
	// Same key joins: proves a is reachable and the failure above was the key.
	c, _ := startNode(t, "c", func(c *Config) { c.GossipKey = k1 }, seeds(a))
	eventually(t, 15*time.Second, "c (right key) joins", func() (bool, string) {
		n := ra.names()
		return slices.Equal(n, []string{"c"}), fmt.Sprint(n)
	})
	if m := memberNames(b); !slices.Equal(m, []string{"b"}) {
		t.Fatalf("b (wrong key) sees members %v", m)
	}
	if m := memberNames(c); slices.Contains(m, "b") {
		t.Fatalf("c sees b: %v", m)
	}
	if slices.Contains(ra.names(), "b") {
		t.Fatal("a's handler was told about b")
	}
}

func TestIncompatiblePeerNotReported(t *testing.T) {
	a, _ := startNode(t, "a")
	ra := newRecorder()
	a.AddHandler(ra)
	startNode(t, "wrongport", seeds(a), func(c *Config) { c.PingPort = 40000 })
	startNode(t, "v2", seeds(a), func(c *Config) { c.Version = "v2.0.1" })
	startNode(t, "good", seeds(a), func(c *Config) { c.Version = "v1.7.0" })

	eventually(t, 15*time.Second, "a gossips with all four and ignores two", func() (bool, string) {
		n := a.memberlist().NumMembers()
		pp := testutil.ToFloat64(a.met.incompatible.WithLabelValues(reasonPingPort))
		mv := testutil.ToFloat64(a.met.incompatible.WithLabelValues(reasonMajor))
		return n == 4 && pp == 1 && mv == 1 && slices.Equal(ra.names(), []string{"good"}),
			fmt.Sprintf("members=%d ping_port=%v major=%v handler=%v", n, pp, mv, ra.names())
	})
	if m := memberNames(a); !slices.Equal(m, []string{"a", "good"}) {
		t.Fatalf("Members = %v, want only compatible ones", m)
	}
	ev, _ := ra.snapshot()
	if len(ev) != 1 {
		t.Fatalf("handler events %v, want only good's join", ev)
	}
}

// TestGarbageOnGossipPort throws random bytes at the gossip port over UDP and
// TCP, in clear and encrypted clusters, and checks the node still gossips:
// an existing member stays, a new one can join.
func TestGarbageOnGossipPort(t *testing.T) {
	key := make([]byte, 16)
	rand.Read(key)
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"clear", nil}, {"encrypted", key}} {
		t.Run(tc.name, func(t *testing.T) {
			withKey := func(c *Config) { c.GossipKey = tc.key }
			a, _ := startNode(t, "a", withKey)
			ra := newRecorder()
			a.AddHandler(ra)
			startNode(t, "b", withKey, seeds(a))
			eventually(t, 15*time.Second, "b joins", func() (bool, string) {
				return slices.Equal(ra.names(), []string{"b"}), fmt.Sprint(ra.names())
			})

			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port()))
			sendGarbage(t, addr)

			startNode(t, "c", withKey, seeds(a))
			eventually(t, 20*time.Second, "c joins after garbage, b still there", func() (bool, string) {
				return slices.Equal(ra.names(), []string{"b", "c"}), fmt.Sprint(ra.names())
			})
			ev, _ := ra.snapshot()
			if slices.Contains(ev, "leave b") {
				t.Fatalf("b was reported gone: %v", ev)
			}
		})
	}
}

func sendGarbage(t *testing.T, addr string) {
	t.Helper()
	u, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	buf := make([]byte, 1400)
	for i := range 300 {
		n := 1 + i*7%len(buf)
		rand.Read(buf[:n])
		if i%10 == 0 && n > 1 {
			buf[0] = byte(i / 10) // valid-looking memberlist message types
		}
		if _, err := u.Write(buf[:n]); err != nil && !errors.Is(err, net.ErrClosed) {
			// ECONNREFUSED from an earlier datagram is fine; keep going.
			continue
		}
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			b := make([]byte, 1+i*211)
			rand.Read(b)
			if i%4 == 0 {
				b[0] = byte(i / 4) // a plausible message type, then garbage
			}
			c.Write(b)
			if i%2 == 0 {
				io.Copy(io.Discard, c) // wait for the node to hang up
			}
		}()
	}
	wg.Wait()
}
