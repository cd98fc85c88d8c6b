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
func TestWebConfigTLS(t *testing.T) {
	dir := t.TempDir()
	lo := net.ParseIP("127.0.0.1")
	ca := testcert.NewCA(t, "web ca")
	caFile, certFile, keyFile := testcert.Files(t, dir, ca, ca.Leaf(t, "localhost", lo), "srv-")
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg := filepath.Join(dir, "web.yml")
	yml := fmt.Sprintf(`tls_server_config:
  cert_file: %s
  key_file: %s
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: %s
basic_auth_users:
  prom: %s
`, certFile, keyFile, caFile, hash)
	if err := os.WriteFile(webCfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ValidateWebConfig(webCfg); err != nil {
		t.Fatal(err)
	}
	if err := ValidateWebConfig(filepath.Join(dir, "missing.yml")); err == nil {
		t.Error("a missing web config validated")
	}

	cfg := DefaultConfig()
	cfg.WebConfigFile = webCfg
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
