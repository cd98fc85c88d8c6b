package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
)

// TLSFiles names the cluster CA and this node's certificate and key (PEM):
// -tlsCAFile, -tlsCertFile, -tlsKeyFile. Every member's API serves its
// certificate and the aggregator presents its own (mTLS); see docs/security.md.
type TLSFiles struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is set.
func (f TLSFiles) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// ClusterTLS is the loaded cluster CA and node certificate.
type ClusterTLS struct {
	Pool *x509.CertPool
	Cert tls.Certificate
}

// LoadTLS reads and checks the three files; all three are required.
func LoadTLS(f TLSFiles) (*ClusterTLS, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("-tlsCAFile, -tlsCertFile and -tlsKeyFile must be set together")
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("-tlsCAFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tlsCAFile %s: no PEM certificate found", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("-tlsCertFile/-tlsKeyFile: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("-tlsCertFile: %w", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("-tlsCertFile is not signed by -tlsCAFile: %w", err)
	}
	cert.Leaf = leaf
	return &ClusterTLS{Pool: pool, Cert: cert}, nil
}

// ServerConfig is the member API's TLS: it presents the node certificate and
// verifies a client certificate from the cluster CA when one is offered
// (the aggregator's); clients without one (browsers, Prometheus) still
// connect and authenticate with the token.
func (c *ClusterTLS) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.Cert},
		ClientCAs:    c.Pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
}

// ClientConfig is the aggregator's TLS towards one member: the member must
// present a certificate from the cluster CA valid for addr that names the
// member (VerifyIdentity), and the aggregator presents its own.
func (c *ClusterTLS) ClientConfig(name string, addr netip.Addr) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      c.Pool,
		Certificates: []tls.Certificate{c.Cert},
		ServerName:   addr.Unmap().String(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("member presented no certificate")
			}
			return VerifyIdentity(cs.PeerCertificates[0], name, addr)
		},
	}
}

// ErrIdentity marks a certificate that chains to the cluster CA but names
// another member than the one gossip announced.
var ErrIdentity = errors.New("certificate does not match the member's gossip identity")

// VerifyIdentity checks that a (chain-verified) member certificate names the
// member's gossip name (a DNS SAN or the common name) and covers its gossip
// address (an IP SAN). Gossip says who a member is; the certificate must agree.
func VerifyIdentity(cert *x509.Certificate, name string, addr netip.Addr) error {
	if name != cert.Subject.CommonName && !slices.Contains(cert.DNSNames, name) {
		return fmt.Errorf("%w: name %q not in CN %q or DNS SANs %v", ErrIdentity, name, cert.Subject.CommonName, cert.DNSNames)
	}
	addr = addr.Unmap()
	for _, ip := range cert.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap() == addr {
			return nil
		}
	}
	return fmt.Errorf("%w: address %s not in IP SANs %v", ErrIdentity, addr, cert.IPAddresses)
}
