package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/testcert"
)

// TestWebConfigTLS serves the API through an exporter-toolkit web config
// (TLS, client CA, a bcrypt basic-auth user) and checks that https with the
// right certificate and password works, and that plain http, a certificate
// from another CA, no certificate and a wrong password are refused.
// webFixture is an exporter-toolkit web config requiring a client
// certificate from its CA and basic auth (user prom), with the files a
// client needs.
type webFixture struct {
	ca                                    *testcert.CA
	config, caFile, clientCert, clientKey string
	password                              string
}

func newWebFixture(t *testing.T) webFixture {
	t.Helper()
	dir := t.TempDir()
	lo := net.ParseIP("127.0.0.1")
	w := webFixture{ca: testcert.NewCA(t, "web ca"), password: "s3cret"}
	var certFile, keyFile string
	w.caFile, certFile, keyFile = testcert.Files(t, dir, w.ca, w.ca.Leaf(t, "localhost", lo), "srv-")
	_, w.clientCert, w.clientKey = testcert.Files(t, dir, w.ca, w.ca.Leaf(t, "prometheus", lo), "client-")
	hash, err := bcrypt.GenerateFromPassword([]byte(w.password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	w.config = filepath.Join(dir, "web.yml")
	yml := fmt.Sprintf(`tls_server_config:
  cert_file: %s
  key_file: %s
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: %s
basic_auth_users:
  prom: %s
`, certFile, keyFile, w.caFile, hash)
	if err := os.WriteFile(w.config, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWebConfigTLS(t *testing.T) {
	w := newWebFixture(t)
	ca := w.ca
	lo := net.ParseIP("127.0.0.1")
	if err := ValidateWebConfig(w.config); err != nil {
		t.Fatal(err)
	}
	if err := ValidateWebConfig(filepath.Join(t.TempDir(), "missing.yml")); err == nil {
		t.Error("a missing web config validated")
	}

	cfg := DefaultConfig()
	cfg.WebConfigFile = w.config
	ts := newTestServer(t, cfg, Deps{Graph: graph.New(graph.DefaultConfig())})

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	get := func(url string, cert *tls.Certificate, user, pass string) (int, error) {
		tc := &tls.Config{RootCAs: pool}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	good := ca.Leaf(t, "prometheus", lo).TLS(t)
	wrong := testcert.NewCA(t, "other").Leaf(t, "prometheus", lo).TLS(t)

	if code, err := get(ts.URL+"/metrics", &good, "prom", "s3cret"); err != nil || code != http.StatusOK {
		t.Errorf("https with certificate and password: %d %v, want 200", code, err)
	}
	if code, err := get(ts.URL+"/metrics", &good, "prom", "nope"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d %v, want 401", code, err)
	}
	if code, err := get(ts.URL+"/metrics", &wrong, "prom", "s3cret"); err == nil {
		t.Errorf("certificate from another CA: %d, want a TLS error", code)
	}
	if code, err := get(ts.URL+"/metrics", nil, "prom", "s3cret"); err == nil {
		t.Errorf("no client certificate: %d, want a TLS error", code)
	}
	plain := "http://" + ts.URL[len("https://"):]
	if code, err := get(plain+"/metrics", nil, "prom", "s3cret"); err == nil && code == http.StatusOK {
		t.Errorf("plain http got %d", code)
	}
}
