package api

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/testcert"
)

func TestStreamLimiter(t *testing.T) {
	l := newStreamLimiter(4, 2, 1)
	var rel []func()
	take := func(client string, agg bool, want string) {
		t.Helper()
		r, f := l.acquire(client, agg)
		if r != want {
			t.Fatalf("acquire(%s, aggregator=%v) = %q, want %q", client, agg, r, want)
		}
		if f != nil {
			rel = append(rel, f)
		}
	}
	take("a", false, "")
	take("a", false, "")
	take("a", false, rejectPerClient)
	take("b", false, "")
	take("c", false, rejectTotal) // the last slot is reserved
	take("c", true, "")           // for an aggregator
	take("d", true, rejectTotal)
	rel[0]()
	rel[0]()                      // idempotent
	take("c", false, rejectTotal) // the aggregator holds a slot
	rel[1]()
	take("c", false, "")
}

// clusterTLS makes a cluster CA, a server config for 127.0.0.1 and a client
// config with (aggregator) or without a client certificate.
func clusterTLS(t *testing.T) (srv *tls.Config, client func(withCert bool) *tls.Config) {
	t.Helper()
	ca := testcert.NewCA(t, "dnms cluster")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	lo := net.ParseIP("127.0.0.1")
	srvCert := ca.Leaf(t, "agent", lo).TLS(t)
	aggCert := ca.Leaf(t, "aggr", lo).TLS(t)
	srv = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	return srv, func(withCert bool) *tls.Config {
		c := &tls.Config{RootCAs: pool}
		if withCert {
			c.Certificates = []tls.Certificate{aggCert}
		}
		return c
	}
}

// hog opens an SSE stream from a local address of its own and never reads
// it; it reports whether the server admitted it.
func hog(t *testing.T, addr string, from net.IP, tc *tls.Config) bool {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, tc)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /v1/events/graph HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 256), nil)
	if err != nil {
		t.Fatalf("stream from %s: %v", from, err)
	}
	return resp.StatusCode == http.StatusOK // and never read further
}

// TestSSEHogsLeaveAggregatorSlots: 100 clients from 100 addresses open
// streams and never read. The stream limit admits 60 of them; the four
// reserved slots stay for the aggregator, whose client certificate gets it
// a stream that delivers events.
func TestSSEHogsLeaveAggregatorSlots(t *testing.T) {
	srvTLS, client := clusterTLS(t)
	cfg := DefaultConfig()
	cfg.TLS = srvTLS
	g := graph.New(graph.DefaultConfig())
	ts := newTestServer(t, cfg, Deps{Graph: g})
	addr := ts.URL[len("https://"):]

	admitted := 0
	for i := range 100 {
		if hog(t, addr, net.IPv4(127, 0, 1, byte(i+1)), client(false)) {
			admitted++
		}
	}
	if want := cfg.MaxStreams - cfg.ReservedStreams; admitted != want {
		t.Fatalf("%d of 100 hogs admitted, want %d", admitted, want)
	}
	if got := counterValue(t, ts, "dnms_api_event_streams_rejected_total"); got != float64(100-admitted) {
		t.Errorf("rejections counted %v, want %d", got, 100-admitted)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: client(true)}}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/events/graph", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("aggregator with a cluster certificate: %s %s", resp.Status, b)
	}
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("aggregator stream: %v", err)
		}
		if line == "event: snapshot\n" {
			break
		}
	}
}

// TestSSEPerClientLimit: one address cannot take more than its share.
func TestSSEPerClientLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxStreamsPerClient = 2
	ts := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	openSSE(t, ts.URL+"/v1/events/graph", nil)
	openSSE(t, ts.URL+"/v1/events/graph", nil)
	if c, resp := tryOpenSSE(t, ts.URL+"/v1/events/graph", nil); c != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third stream from one client: %d, want 503", resp.StatusCode)
	}
}

// TestScrapesQueue: 200 concurrent scrapes through 2 slots all succeed;
// they wait their turn instead of failing at once.
func TestScrapesQueue(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxScrapes = 2
	ts := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		bad  []int
		errs []error
	)
	tr := &http.Transport{MaxConnsPerHost: 50}
	defer tr.CloseIdleConnections()
	for range 200 {
		wg.Go(func() {
			resp, err := (&http.Client{Transport: tr}).Get(ts.URL + "/metrics")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				bad = append(bad, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 || len(errs) > 0 {
		t.Fatalf("%d scrapes failed (%v), %d errors (%v)", len(bad), bad, len(errs), errs)
	}
}

// TestMaxConns: with a cap of 4 connections, 4 silent connections hold
// every slot until the header timeout drops them; a fifth client is served
// only then.
func TestMaxConns(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxConns = 4
	cfg.ReadHeaderTimeout = 400 * time.Millisecond
	ts := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	addr := ts.URL[len("http://"):]
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	start := time.Now()
	resp, err := http.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("fifth connection served after %v: the cap of 4 did not hold", d)
	}
}

// TestSlowConnectionsBounded: 2,000 connections that send half a request
// header and stall cost the server at most -httpMaxConns goroutines and a
// bounded heap (the rest wait in the accept queue, in the kernel), and a
// real request is served once the header timeout frees slots.
func TestSlowConnectionsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 sockets")
	}
	cfg := DefaultConfig()
	cfg.MaxConns = 256
	cfg.ReadHeaderTimeout = 500 * time.Millisecond
	ts := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	addr := ts.URL[len("http://"):]
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	const n = 2000
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // and never the end
		conns = append(conns, c)
	}
	g1 := runtime.NumGoroutine()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d slow connections: +%d goroutines, heap +%d KiB", n, g1-g0, heap>>10)
	if g1-g0 > cfg.MaxConns+50 {
		t.Errorf("%d goroutines for %d slow connections with a cap of %d", g1-g0, n, cfg.MaxConns)
	}
	if heap > 64<<20 {
		t.Errorf("heap grew by %d MiB", heap>>20)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatalf("a real request behind 2,000 slow ones: %v", err)
	}
	resp.Body.Close()
}

// TestGarbageConnectionsCounted: garbage at the HTTP port and a plain
// client at a TLS port are refused and counted by reason.
func TestGarbageConnectionsCounted(t *testing.T) {
	plain := newTestServer(t, DefaultConfig(), Deps{Graph: graph.New(graph.DefaultConfig())})
	srvTLS, _ := clusterTLS(t)
	cfg := DefaultConfig()
	cfg.TLS = srvTLS
	secure := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})
	for _, ts := range []*testServer{plain, secure} {
		addr := ts.URL[len("https://"):]
		if ts == plain {
			addr = ts.URL[len("http://"):]
		}
		for i := range 5 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 64+i*100)
			for j := range b {
				b[j] = byte(i + j*13)
			}
			b[len(b)-1], b[len(b)-2] = '\n', '\n'
			c.Write(b)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c) // until the server closes it
			c.Close()
		}
	}
	for _, tc := range []struct {
		ts     *testServer
		reason string
	}{{plain, connNoRequest}, {secure, connTLSHandshake}} {
		waitFor(t, 5*time.Second, tc.reason+" counted", func() bool {
			return testutilCounter(tc.ts, "dnms_api_connections_rejected_total", tc.reason) == 5
		})
	}
	if n := testutilCounter(secure, "dnms_api_connections_rejected_total", connNoRequest); n != 0 {
		t.Errorf("failed TLS handshakes also counted as no_request (%v)", n)
	}
	// A served request is not a rejection.
	resp, err := http.Get(plain.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, 2*time.Second, "no extra count", func() bool {
		return testutilCounter(plain, "dnms_api_connections_rejected_total", connNoRequest) == 5
	})
}

// testutilCounter reads one labelled sample of a counter from ts's registry.
func testutilCounter(ts *testServer, name, reason string) float64 {
	mfs, _ := ts.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
