package main

import (
	"bytes"
	"encoding/base64"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/probe"
	"github.com/dnms/dnms/internal/testcert"
)

func TestProbeKeyFromGossipKey(t *testing.T) {
	gk := []byte("0123456789abcdef")
	b64 := base64.StdEncoding.EncodeToString
	c, err := parseFlags([]string{"-gossipKey", b64(gk)}, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	if !c.ProbeKeyDerived || !bytes.Equal(c.ProbeKey, probe.DeriveKey(gk)) || c.trust() != aggregator.TrustGossipKey {
		t.Errorf("probe key %x derived=%v trust=%v", c.ProbeKey, c.ProbeKeyDerived, c.trust())
	}
	pk := []byte("explicit probe key!")
	if c, err = parseFlags([]string{"-gossipKey", b64(gk), "-probeKey", b64(pk)}, io.Discard, fixedIP); err != nil {
		t.Fatal(err)
	}
	if c.ProbeKeyDerived || !bytes.Equal(c.ProbeKey, pk) {
		t.Errorf("an explicit -probeKey must win: %x", c.ProbeKey)
	}
	if c, err = parseFlags(nil, io.Discard, fixedIP); err != nil {
		t.Fatal(err)
	}
	if c.ProbeKey != nil || c.trust() != aggregator.TrustOpen {
		t.Errorf("no keys: probe key %x trust %v", c.ProbeKey, c.trust())
	}
	var help bytes.Buffer
	parseFlags([]string{"-h"}, &help, fixedIP)
	if !strings.Contains(help.String(), "UNAUTHENTICATED") {
		t.Error("-h does not say when probes are unauthenticated")
	}
}

func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "cluster")
	caF, certF, keyF := testcert.Files(t, dir, ca, ca.Leaf(t, "n1", net.ParseIP("198.18.0.10")), "")
	c, err := parseFlags([]string{"-tlsCAFile", caF, "-tlsCertFile", certF, "-tlsKeyFile", keyF}, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterTLS == nil || c.trust() != aggregator.TrustMTLS {
		t.Fatalf("TLS not loaded: trust %v", c.trust())
	}
	other := testcert.NewCA(t, "other")
	otherCA, _, _ := testcert.Files(t, dir, other, other.Leaf(t, "x"), "other-")
	if _, err := parseFlags([]string{"-tlsCAFile", otherCA, "-tlsCertFile", certF, "-tlsKeyFile", keyF}, io.Discard, fixedIP); err == nil ||
		!strings.Contains(err.Error(), "not signed by -tlsCAFile") {
		t.Errorf("certificate from another CA: %v", err)
	}
}
