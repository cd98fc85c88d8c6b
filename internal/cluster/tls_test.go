package cluster

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/dnms/dnms/internal/testcert"
)

func TestVerifyIdentity(t *testing.T) {
	ca := testcert.NewCA(t, "cluster")
	l := ca.Leaf(t, "n1", net.ParseIP("198.18.0.1"), net.ParseIP("fd00::1"))
	cert := l.TLS(t)
	leaf := cert.Leaf
	if leaf == nil {
		t.Fatal("no parsed leaf")
	}
	for _, tc := range []struct {
		name string
		addr string
		ok   bool
	}{
		{"n1", "198.18.0.1", true},
		{"n1", "::ffff:198.18.0.1", true},
		{"n1", "fd00::1", true},
		{"n2", "198.18.0.1", false},
		{"n1", "198.18.0.2", false},
	} {
		err := VerifyIdentity(leaf, tc.name, netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrIdentity)) {
			t.Errorf("VerifyIdentity(%s, %s) = %v, want ok=%v", tc.name, tc.addr, err, tc.ok)
		}
	}
}
