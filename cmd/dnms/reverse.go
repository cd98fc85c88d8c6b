package main

import (
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/mapper"
	"github.com/dnms/dnms/internal/pinger"
)

// peerAPIs turns gossip members into the API addresses the pinger's
// reverse route source asks (pinger.Reverse), reached the way the
// aggregator reaches members: the advertised API address, cluster TLS with
// the member's identity checked, and the token only where membership is
// proven (not in an open cluster).
type peerAPIs struct {
	tls    *cluster.ClusterTLS
	token  string
	client *http.Client // without TLS: one client for every peer
}

func newPeerAPIs(cfg *config) peerAPIs {
	p := peerAPIs{tls: cfg.ClusterTLS, client: &http.Client{Transport: peerTransport()}}
	if cfg.trust() != aggregator.TrustOpen {
		p.token = cfg.AggregatorToken
	}
	return p
}

func peerTransport() *http.Transport {
	d := &net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}
	return &http.Transport{
		Proxy: nil, DialContext: d.DialContext,
		TLSHandshakeTimeout: 3 * time.Second, ResponseHeaderTimeout: 3 * time.Second,
		MaxIdleConnsPerHost: 1, IdleConnTimeout: 90 * time.Second,
	}
}

// of returns where member p's API is; false when it advertises none.
func (a peerAPIs) of(p cluster.Peer) (pinger.PeerAPI, bool) {
	addr := p.HTTPAddr
	if !addr.IsValid() {
		addr = p.Addr
	}
	if p.HTTPPort == 0 || !addr.IsValid() {
		return pinger.PeerAPI{}, false
	}
	if a.tls == nil {
		return pinger.PeerAPI{URL: aggregator.BaseURL(addr, p.HTTPPort), Client: a.client, Token: a.token}, true
	}
	tr := peerTransport()
	tr.TLSClientConfig = a.tls.ClientConfig(p.Name, addr)
	return pinger.PeerAPI{
		URL:    "https://" + netip.AddrPortFrom(addr.Unmap(), p.HTTPPort).String(),
		Client: &http.Client{Transport: tr}, Token: a.token,
	}, true
}

// peerRow is one /v1/mapper/peers row: the mapper's, plus how the pinger
// pings the peer's mapped ports (one schedule per distinct forward and
// reverse route pair, its ports taking turns).
type peerRow struct {
	mapper.PeerStatus
	Ping *pinger.PeerGroups `json:"ping,omitempty"`
}

func mapperPeers(mp *mapper.Mapper, pg *pinger.Pinger) []peerRow {
	groups := map[netip.Addr]*pinger.PeerGroups{}
	for _, g := range pg.Groups() {
		groups[g.Peer] = &g
	}
	peers := mp.Peers()
	out := make([]peerRow, len(peers))
	for i, p := range peers {
		out[i] = peerRow{PeerStatus: p, Ping: groups[p.Peer]}
	}
	return out
}
