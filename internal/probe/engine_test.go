package probe

import (
	"context"
	"errors"

	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var portBase atomic.Uint32

func init() { portBase.Store(uint32(20000 + (os.Getpid()%400)*100)) }

// testPorts returns a ping port and source range unlikely to clash with
// parallel test processes.
func testPorts() (ping, start, end uint16) {
	b := uint16(portBase.Add(20))
	return b, b + 1, b + 8
}

type testEngine struct {
	*Engine
	reg *prometheus.Registry
}

// startPair starts engines on 127.0.0.2 and 127.0.0.3 with the same ports.
func startPair(t *testing.T, mod func(c *Config)) (a, b testEngine) {
	t.Helper()
	for try := 0; ; try++ {
		ping, s, e := testPorts()
		mk := func(addr string) (testEngine, error) {
			c := DefaultConfig()
			c.LocalAddr = netip.MustParseAddr(addr)
			c.PingPort, c.SrcPortStart, c.SrcPortEnd = ping, s, e
			c.Timestamps = "user"
			c.Timeout = 500 * time.Millisecond
			c.LossResolveWindow = time.Second
			reg := prometheus.NewRegistry()
			c.Registerer = reg
			if mod != nil {
				mod(&c)
			}
			en, err := New(c)
			return testEngine{en, reg}, err
		}
		var err error
		if a, err = mk("127.0.0.2"); err == nil {
			if b, err = mk("127.0.0.3"); err != nil {
				a.Close()
			}
		}
		if err != nil {
			if try < 10 {
				continue
			}
			t.Fatalf("start engines: %v", err)
		}
		break
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		}
	})
	return a, b
}

// collect reads n results or fails at the deadline.
func collect(t *testing.T, e *Engine, n int, within time.Duration) []Result {
	t.Helper()
	var out []Result
	deadline := time.After(within)
	for len(out) < n {
		select {
		case r := <-e.Results():
			out = append(out, r)
		case <-deadline:
			t.Fatalf("got %d of %d results: %+v", len(out), n, out)
		}
	}
	return out
}

func TestEngineConfig(t *testing.T) {
	c := DefaultConfig()
	c.LocalAddr = netip.MustParseAddr("127.0.0.2")
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
	}{
		{"overlap", func(c *Config) { c.PingPort = c.SrcPortStart + 1 }},
		{"zero port", func(c *Config) { c.SrcPortStart = 0 }},
		{"inverted", func(c *Config) { c.SrcPortStart, c.SrcPortEnd = 40010, 40000 }},
		{"no addr", func(c *Config) { c.LocalAddr = netip.Addr{} }},
		{"bad source", func(c *Config) { c.Timestamps = "gps" }},
		{"ebpf without loader", func(c *Config) { c.Timestamps = "ebpf" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := c
			tc.mod(&cc)
			if e, err := New(cc); err == nil {
				e.Close()
				t.Fatal("accepted")
			}
		})
	}
}

func TestEngineLoopbackPing(t *testing.T) {
	for _, src := range []Source{SourceUser, SourceKernel} {
		t.Run(string(src), func(t *testing.T) {
			a, b := startPair(t, func(c *Config) { c.Timestamps = string(src); c.Key = []byte("k") })
			if a.Source() != src {
				t.Fatalf("source %s", a.Source())
			}
			warm := warmUp(t, a.Engine, b.LocalAddr(), src)
			const n = 200
			for i := range n {
				port := a.cfg.SrcPortStart + uint16(i%8)
				if _, err := a.Ping(b.LocalAddr(), port); err != nil {
					t.Fatal(err)
				}
			}
			rs := collect(t, a.Engine, n, 10*time.Second)
			fallbacks := 0
			for _, r := range rs {
				if r.Lost {
					t.Fatalf("lost on loopback: %+v", r)
				}
				if string(r.Source) != string(src) {
					fallbacks++ // a stamp late beyond StampWait (loaded CI)
				}
				if r.RTT <= 0 || r.RTT > a.cfg.Timeout {
					t.Fatalf("implausible RTT %v: %+v", r.RTT, r)
				}
				if r.T2 == 0 || r.T3 < r.T2 || r.T4 <= r.T1 {
					t.Fatalf("timestamps: %+v", r)
				}
			}
			if fallbacks > n/20 {
				t.Fatalf("%d of %d samples fell back from %s", fallbacks, n, src)
			}
			// B counts an ack after sendmsg returns, which can be after A
			// matched it, and A counts a matched ack after the matcher may
			// already have delivered its result: poll both.
			deadline := time.Now().Add(5 * time.Second)
			for (testutil.ToFloat64(b.met.reflected) < n+warm || testutil.ToFloat64(a.met.acksReceived) < n+warm) &&
				time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := testutil.ToFloat64(b.met.reflected); got != n+warm {
				t.Fatalf("reflector sent %v acks, want %v", got, n+warm)
			}
			if got := testutil.ToFloat64(a.met.acksReceived); got != n+warm {
				t.Fatalf("acks received %v", got)
			}
		})
	}
}

// The kernel (eBPF) reflector rewrites type, flags bit1, t2, t3 and the
// counters and copies everything else; the userspace reflector must produce
// the same bytes apart from flags bit1 and the times.
func TestReflectorBytes(t *testing.T) {
	a, b := startPair(t, func(c *Config) { c.Key = []byte("cluster") })
	_ = a
	a.Close() // free 127.0.0.2's ports: we play A by hand
	ping := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), b.cfg.PingPort)
	src := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), b.cfg.SrcPortStart)
	rx, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ping))
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(src))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	c := NewCodec([]byte("cluster"))
	for _, typ := range []Type{TypePing, TypeTrace} {
		p := Packet{Type: typ, SrcPort: src.Port(), Epoch: 77, Seq: 5, T1: 123456}
		if typ == TypeTrace {
			p.TTL, p.PadLen = 9, 9
		}
		sent := c.AppendEncode(nil, &p)
		if _, err := tx.WriteToUDPAddrPort(sent, netip.AddrPortFrom(b.LocalAddr(), b.cfg.PingPort)); err != nil {
			t.Fatal(err)
		}
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2048)
		n, from, err := rx.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no ack: %v", err)
		}
		if from.Port() != src.Port() || from.Addr() != b.LocalAddr() {
			t.Fatalf("ack from %v, want mirrored %v:%d", from, b.LocalAddr(), src.Port())
		}
		got := buf[:n]
		var q Packet
		if r := c.Decode(got, &q); r != RejectNone {
			t.Fatalf("ack rejected: %v", r)
		}
		// What the kernel reflector would have sent.
		want := append([]byte(nil), sent...)
		want[5] = byte(TypeAck)
		if typ == TypeTrace {
			want[5] = byte(TypeTraceAck)
		}
		copy(want[32:48], got[32:48]) // t2, t3: times differ
		want[48+7], want[56+7] = 1, 1 // first probe of this flow... per type below
		if typ == TypeTrace {
			want[48+7], want[56+7] = 2, 2 // counters count pings and traces
		}
		if string(got) != string(want) {
			t.Fatalf("%v: ack bytes\n got % x\nwant % x", typ, got, want)
		}
		if q.T2 == 0 || q.T3 < q.T2 {
			t.Fatalf("t2/t3 %d/%d", q.T2, q.T3)
		}
	}
}

func TestEngineRejects(t *testing.T) {
	a, b := startPair(t, func(c *Config) { c.Key = []byte("right") })
	if _, err := a.Ping(b.LocalAddr(), a.cfg.SrcPortStart); err != nil {
		t.Fatal(err)
	}
	good := collect(t, a.Engine, 1, 5*time.Second)[0]
	if good.Lost {
		t.Fatal("lost")
	}
	// Garbage and a spoofed ack (wrong key) for the next seq, from B's
	// mirrored port.
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 4)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.LocalAddr(), a.cfg.PingPort))
	spoof := Packet{Type: TypeAck, SrcPort: a.cfg.SrcPortStart, Epoch: a.Epoch(), Seq: 2, T1: 1, T2: 2, T3: 3, RxCount: 2, AckCount: 2}
	frames := [][]byte{
		[]byte("garbage"), make([]byte, 64), make([]byte, 3000),
		NewCodec([]byte("wrong")).AppendEncode(nil, &spoof),
		AppendEncode(nil, &spoof), // no HMAC at all
	}
	for _, f := range frames {
		conn.WriteToUDP(f, dst)
	}
	// A replayed copy of a genuine ack: duplicate.
	wantRejects := float64(len(frames))
	deadline := time.Now().Add(5 * time.Second)
	total := func() float64 {
		var s float64
		for _, r := range AllRejectReasons() {
			s += testutil.ToFloat64(a.met.rejected.WithLabelValues(r.String()))
		}
		return s
	}
	for total() < wantRejects && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling a metric, not synchronising
	}
	if got := total(); got != wantRejects {
		t.Fatalf("rejected %v, want %v", got, wantRejects)
	}
	if got := testutil.ToFloat64(a.met.rejected.WithLabelValues("hmac")); got != 2 {
		t.Fatalf("hmac rejects %v, want 2", got)
	}
	// The spoofed seq 2 must not have produced a sample; a real ping 2 still works.
	if _, err := a.Ping(b.LocalAddr(), a.cfg.SrcPortStart); err != nil {
		t.Fatal(err)
	}
	r := collect(t, a.Engine, 1, 5*time.Second)[0]
	if r.Lost || r.Seq != 2 || r.T2 == 2 {
		t.Fatalf("second ping: %+v", r)
	}
	select {
	case extra := <-a.Results():
		t.Fatalf("extra result %+v", extra)
	default:
	}
}

func TestEngineNoUserspaceReflect(t *testing.T) {
	a, b := startPair(t, func(c *Config) {
		if c.LocalAddr == netip.MustParseAddr("127.0.0.3") {
			c.Reflect = false
		}
	})
	if _, err := a.Ping(b.LocalAddr(), a.cfg.SrcPortStart); err != nil {
		t.Fatal(err)
	}
	r := collect(t, a.Engine, 1, 5*time.Second)[0]
	if !r.Lost {
		t.Fatalf("answered without reflector: %+v", r)
	}
	if got := testutil.ToFloat64(b.met.userspacePings); got != 1 {
		t.Fatalf("userspace pings %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.met.reflected); got != 0 {
		t.Fatalf("reflected %v", got)
	}
}

func TestEngineTraceLoopback(t *testing.T) {
	a, b := startPair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.Trace(ctx, b.LocalAddr(), a.cfg.SrcPortStart+2, 8, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Reached || len(res.Hops) != 1 || res.Hops[0].Addr != b.LocalAddr() {
		t.Fatalf("trace %+v", res)
	}
	if res.ProbesSent < 1 || res.ProbesSent > 8 {
		t.Fatalf("probes sent %d", res.ProbesSent)
	}
	// Pings on the same flow still resolve cleanly afterwards.
	if _, err := a.Ping(b.LocalAddr(), a.cfg.SrcPortStart+2); err != nil {
		t.Fatal(err)
	}
	if r := collect(t, a.Engine, 1, 5*time.Second)[0]; r.Lost {
		t.Fatalf("%+v", r)
	}
}

func TestEngineTraceNoDNMS(t *testing.T) {
	a, _ := startPair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// 127.0.0.9 runs no dnms: the port unreachable ends the trace.
	res, err := a.Trace(ctx, netip.MustParseAddr("127.0.0.9"), a.cfg.SrcPortStart, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Reached || len(res.Hops) != 1 || res.Hops[0].Addr != netip.MustParseAddr("127.0.0.9") {
		t.Fatalf("trace %+v", res)
	}
}

// warmUp pings until a sample from src comes back and returns how many pings
// it took. The kernel turns software rx stamping on (a static key) from a
// work queue after the first socket asks, so the first packets after start
// can lack kernel stamps; those samples correctly fall back to user.
func warmUp(t *testing.T, e *Engine, peer netip.Addr, src Source) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		if _, err := e.Ping(peer, e.cfg.SrcPortStart); err != nil {
			t.Fatal(err)
		}
		n++
		r := collect(t, e, 1, 5*time.Second)[0]
		if !r.Lost && string(r.Source) == string(src) {
			return float64(n)
		}
	}
	t.Fatalf("no %s sample after %d pings", src, n)
	return 0
}
