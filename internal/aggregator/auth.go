package aggregator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/dnms/dnms/internal/cluster"
)

// Trust is how members prove they belong to the cluster, and so whether the
// aggregator sends them its token (docs/security.md).
type Trust int

const (
	// TrustOpen: nothing proves membership (no gossip key, no TLS). Members
	// get no token; their graphs are still imported.
	TrustOpen Trust = iota
	// TrustGossipKey: memberlist encryption authenticates every member's
	// name, address and metadata; the member's API must be on its gossip
	// address.
	TrustGossipKey
	// TrustMTLS: a member's API must present a certificate from the cluster
	// CA naming the member and its address; the aggregator presents its own.
	TrustMTLS
)

func (t Trust) String() string {
	switch t {
	case TrustGossipKey:
		return "gossip-key"
	case TrustMTLS:
		return "mtls"
	}
	return "open"
}

// Reasons a member is rejected, the values of
// dnms_aggregator_member_rejections_total{reason}.
const (
	rejectTLS      = "tls"      // no certificate from the cluster CA
	rejectIdentity = "identity" // the certificate or API address names someone else
)

// sendsToken reports whether the member named name gets the token.
func (a *Aggregator) sendsToken(name string) bool {
	return a.cfg.Token != "" && (a.cfg.Trust != TrustOpen || (a.cfg.Self != "" && name == a.cfg.Self))
}

// memberURL is the member's API base URL, on the address it advertises in
// its gossip metadata (authenticated with a gossip key; with TLS the
// certificate must cover it too).
func (a *Aggregator) memberURL(p cluster.Peer) string {
	addr := p.HTTPAddr
	if !addr.IsValid() {
		addr = p.Addr
	}
	if a.cfg.TLS != nil {
		// The handshake then checks that the certificate names this
		// address (clientFor): an advertised API address is vouched for
		// by the member's certificate, not taken on its word.
		return "https://" + netip.AddrPortFrom(addr.Unmap(), p.HTTPPort).String()
	}
	return BaseURL(addr, p.HTTPPort)
}

// clientFor returns the HTTP client for one member: with cluster TLS a
// transport of its own whose handshake checks the member's identity.
func (a *Aggregator) clientFor(name, baseURL string) (*http.Client, error) {
	if a.cfg.TLS == nil || a.cfg.Client != nil {
		return a.client, nil
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("member URL %q: %w", baseURL, err)
	}
	addr, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return nil, fmt.Errorf("%w: member URL %q has no IP address", cluster.ErrIdentity, baseURL)
	}
	d := &net.Dialer{Timeout: a.cfg.ConnectTimeout, KeepAlive: 15 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSClientConfig:       a.cfg.TLS.ClientConfig(name, addr),
		TLSHandshakeTimeout:   a.cfg.ConnectTimeout,
		ResponseHeaderTimeout: a.cfg.ConnectTimeout,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       90 * time.Second,
	}}, nil
}

// rejection classifies a request error: a failed proof of membership
// returns its reason, anything else "".
func rejection(err error) string {
	if errors.Is(err, cluster.ErrIdentity) {
		return rejectIdentity
	}
	var (
		ver   *tls.CertificateVerificationError
		ua    x509.UnknownAuthorityError
		inv   x509.CertificateInvalidError
		host  x509.HostnameError
		rec   tls.RecordHeaderError
		alert tls.AlertError
	)
	switch {
	case errors.As(err, &ver), errors.As(err, &ua), errors.As(err, &inv),
		errors.As(err, &host), errors.As(err, &rec), errors.As(err, &alert):
		return rejectTLS
	}
	return ""
}
