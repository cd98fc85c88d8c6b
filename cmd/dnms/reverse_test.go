package main

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/pinger"
	"github.com/dnms/dnms/internal/testcert"
)

// With cluster TLS the reverse route source reaches a peer's API over https
// with the peer's identity checked and the token sent: a peer whose
// certificate names it gets asked and answers; the same server under
// another member's name fails the handshake and is never asked. In an open
// cluster no token is sent.
func TestPeerAPIsTLS(t *testing.T) {
	lo := net.ParseIP("127.0.0.1")
	ca := testcert.NewCA(t, "dnms cluster")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tlsOf := func(name string) *cluster.ClusterTLS {
		return &cluster.ClusterTLS{Pool: pool, Cert: ca.Leaf(t, name, lo).TLS(t)}
	}
	local := netip.MustParseAddr("198.18.0.1")
	var asked atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != pinger.RoutesToPath+local.String() || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unexpected "+r.URL.Path, http.StatusBadRequest)
			return
		}
		asked.Add(1)
		w.Write([]byte(`{"peer":"198.18.0.1","traced":true,"ports":[{"srcPort":33436,"routeId":"back"}]}`))
	}))
	srv.TLS = tlsOf("agentB").ServerConfig()
	srv.StartTLS()
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[len("https://127.0.0.1:"):])

	apis := newPeerAPIs(&config{ClusterTLS: tlsOf("agentA"), AggregatorToken: "tok"})
	peer := netip.MustParseAddr("127.0.0.1")
	key := graph.RouteKey{Src: local, Dst: peer, SrcPort: 33436}
	ask := func(name string) (string, bool) {
		api, ok := apis.of(cluster.Peer{Name: name, Addr: peer, HTTPPort: uint16(port)})
		if !ok || api.Token != "tok" {
			t.Fatalf("peer API %+v %v: want one with the token", api, ok)
		}
		reg := prometheus.NewRegistry()
		rc := pinger.DefaultReverseConfig()
		rc.Local, rc.Registerer, rc.Logger = local, reg, slog.New(slog.DiscardHandler)
		rev, err := pinger.NewReverse(rc)
		if err != nil {
			t.Fatal(err)
		}
		rev.SetPeer(peer, api)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		go rev.Run(ctx)
		for ctx.Err() == nil {
			if id, ok := rev.ReverseOf(key); ok {
				return id, true
			}
			if failed(t, reg) {
				return "", false
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		return "", false
	}
	if id, ok := ask("agentB"); !ok || id != "back" || asked.Load() == 0 {
		t.Errorf("peer with its own certificate: reverse %q %v after %d requests, want back", id, ok, asked.Load())
	}
	before := asked.Load()
	if id, ok := ask("agentC"); ok || asked.Load() != before {
		t.Errorf("certificate naming another member: reverse %q %v, %d requests served, want none", id, ok, asked.Load()-before)
	}

	open, _ := newPeerAPIs(&config{AggregatorToken: "tok"}).of(cluster.Peer{Name: "x", Addr: peer, HTTPPort: 1})
	if open.Token != "" || open.URL != "http://127.0.0.1:1" {
		t.Errorf("open cluster: %+v, want http and no token", open)
	}
	if _, ok := apis.of(cluster.Peer{Name: "x", Addr: peer}); ok {
		t.Error("a peer advertising no API port got an API address")
	}
}

// failed reports whether dnms_reverse_route_requests_total{result="error"}
// counted a failure.
func failed(t *testing.T, reg *prometheus.Registry) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dnms_reverse_route_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "error" && m.GetCounter().GetValue() > 0 {
					return true
				}
			}
		}
	}
	return false
}
