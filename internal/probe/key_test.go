package probe

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func TestDeriveKey(t *testing.T) {
	g1 := []byte("0123456789abcdef")
	k := DeriveKey(g1)
	if len(k) != 32 || !bytes.Equal(k, DeriveKey(g1)) {
		t.Fatalf("key %x not 32 stable bytes", k)
	}
	if bytes.Equal(k, DeriveKey([]byte("0123456789abcdeg"))) || bytes.Contains(k, g1) {
		t.Fatal("probe key does not depend on the gossip key alone, or leaks it")
	}
	// RFC 5869 by hand: PRK = HMAC(zero salt, ikm); OKM = HMAC(PRK, info || 1).
	ext := hmac.New(sha256.New, make([]byte, sha256.Size))
	ext.Write(g1)
	exp := hmac.New(sha256.New, ext.Sum(nil))
	exp.Write([]byte(probeKeyLabel))
	exp.Write([]byte{1})
	if want := exp.Sum(nil); !bytes.Equal(k, want) {
		t.Fatalf("DeriveKey = %s, want %s", hex.EncodeToString(k), hex.EncodeToString(want))
	}
}
