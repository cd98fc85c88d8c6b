package cluster

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []NodeMeta{
		{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.2.3"},
		{Role: RoleAggregator, HTTPPort: 1, PingPort: 65535, Version: ""},
		{Role: RoleAgent, HTTPPort: 80, PingPort: 443, Version: strings.Repeat("x", 255)},
		{Role: RoleAgent, HTTPPort: 80, PingPort: 443, Version: "dev-ünïcode"},
		{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1", HTTPAddr: netip.MustParseAddr("198.18.9.1")},
		{Role: RoleAggregator, HTTPPort: 12345, PingPort: 33435, Version: "v1", HTTPAddr: netip.MustParseAddr("fd00::9")},
		{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1", Instance: 1796083200123456789},
		{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1", HTTPAddr: netip.MustParseAddr("fd00::9"), Instance: 1},
	} {
		b, err := m.Encode()
		if err != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		if len(b) > MetaMaxSize {
			t.Fatalf("encode %+v: %d bytes > %d", m, len(b), MetaMaxSize)
		}
		got, err := DecodeMeta(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", m, err)
		}
		if got != m {
			t.Fatalf("round trip: got %+v want %+v", got, m)
		}
		// Bytes appended by a later minor revision of layout 1 are ignored.
		got, err = DecodeMeta(append(b, 0xde, 0xad))
		if err != nil || got != m {
			t.Fatalf("decode with trailing extension: got %+v, %v", got, err)
		}
	}
}

func TestMetaEncodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    NodeMeta
		want error
	}{
		{"unknown role", NodeMeta{Role: "router", HTTPPort: 1, PingPort: 1}, ErrMetaRole},
		{"long version", NodeMeta{Role: RoleAgent, HTTPPort: 1, PingPort: 1, Version: strings.Repeat("v", 256)}, ErrMetaField},
		{"bad utf8", NodeMeta{Role: RoleAgent, HTTPPort: 1, PingPort: 1, Version: "\xff"}, ErrMetaField},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.m.Encode(); !errors.Is(err, tc.want) {
				t.Fatalf("encode: got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMetaDecodeRejects(t *testing.T) {
	valid, err := NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.0.0"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, ErrMetaEmpty},
		{"empty", []byte{}, ErrMetaEmpty},
		{"oversize", make([]byte, MetaMaxSize+1), ErrMetaTooLarge},
		{"meta version 0", mod(func(b []byte) []byte { b[0] = 0; return b }), ErrMetaVersion},
		{"meta version 2", mod(func(b []byte) []byte { b[0] = 2; return b }), ErrMetaVersion},
		{"only version byte", []byte{MetaVersion}, ErrMetaTruncated},
		{"fixed part short", valid[:metaFixedLen-1], ErrMetaTruncated},
		{"version string short", valid[:metaFixedLen+len("v1.0.0")-1], ErrMetaTruncated},
		{"http addr length 5", append(valid[:len(valid)-1:len(valid)-1], 5, 1, 2, 3, 4, 5), ErrMetaField},
		{"http addr short", append(valid[:len(valid)-1:len(valid)-1], 4, 198, 18), ErrMetaTruncated},
		{"http addr unspecified", append(valid[:len(valid)-1:len(valid)-1], 4, 0, 0, 0, 0), ErrMetaField},
		{"role 0", mod(func(b []byte) []byte { b[1] = 0; return b }), ErrMetaRole},
		{"role 9", mod(func(b []byte) []byte { b[1] = 9; return b }), ErrMetaRole},
		{"zero http port", mod(func(b []byte) []byte { b[2], b[3] = 0, 0; return b }), ErrMetaField},
		{"zero ping port", mod(func(b []byte) []byte { b[4], b[5] = 0, 0; return b }), ErrMetaField},
		{"bad utf8 version", mod(func(b []byte) []byte { b[metaFixedLen] = 0xff; return b }), ErrMetaField},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMeta(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("decode: got %+v, %v; want %v", m, err, tc.want)
			}
			if r := metaReason(err); r == "other" {
				t.Fatalf("reason for %v is unlabelled", err)
			}
		})
	}
}

// TestMetaDecodesOlderLayout: meta from a node that predates the HTTP
// address field (it ends after the version string) decodes with a zero
// HTTPAddr, and a node that predates the field skips it (trailing bytes).
func TestMetaDecodesOlderLayout(t *testing.T) {
	m := NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.0.0", HTTPAddr: netip.MustParseAddr("198.18.9.1")}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	old := b[:metaFixedLen+len(m.Version)]
	got, err := DecodeMeta(old)
	if err != nil || got.HTTPAddr.IsValid() || got.Version != m.Version {
		t.Fatalf("older meta: got %+v, %v; want no HTTP address", got, err)
	}
	if b[len(old)] != 4 || len(b) != len(old)+5 {
		t.Fatalf("HTTP address not appended after the version string: % x", b)
	}
}

// TestMetaInstanceLayout: the instance follows the HTTP address as 8 bytes;
// a node that predates it (meta ending after the address) decodes as
// instance 0, and one that predates both fields skips them.
func TestMetaInstanceLayout(t *testing.T) {
	m := NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.0.0", Instance: 0x0102030405060708}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	head := metaFixedLen + len(m.Version)
	if len(b) != head+1+8 || b[head] != 0 || b[head+1] != 1 || b[head+8] != 8 {
		t.Fatalf("instance not appended after the (empty) HTTP address: % x", b)
	}
	for _, cut := range []int{head, head + 1, head + 5} {
		got, err := DecodeMeta(b[:cut])
		if err != nil || got.Instance != 0 || got.Version != m.Version {
			t.Fatalf("meta cut at %d: got %+v, %v; want instance 0", cut, got, err)
		}
	}
	n := m
	n.Instance = 0
	if b0, _ := n.Encode(); len(b0) != head+1 {
		t.Fatalf("instance 0 must not be encoded: % x", b0)
	}
}

// TestMetaLeavingFlag: the leaving flag is a byte after the instance (8
// zero bytes when the instance is unknown); meta without it is not leaving.
func TestMetaLeavingFlag(t *testing.T) {
	for _, inst := range []uint64{0, 42} {
		m := NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.0.0", Instance: inst, Leaving: true}
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		head := metaFixedLen + len(m.Version)
		if len(b) != head+1+8+1 || b[len(b)-1] != metaFlagLeaving {
			t.Fatalf("instance %d: leaving flag not after the instance: % x", inst, b)
		}
		got, err := DecodeMeta(b)
		if err != nil || got != m {
			t.Fatalf("round trip: got %+v, %v; want %+v", got, err, m)
		}
		if got, err := DecodeMeta(b[:len(b)-1]); err != nil || got.Leaving || got.Instance != inst {
			t.Fatalf("without the flags byte: got %+v, %v", got, err)
		}
	}
}

func TestCompatible(t *testing.T) {
	local := NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.4.0"}
	for _, tc := range []struct {
		name string
		peer NodeMeta
		want string
	}{
		{"same", local, ""},
		{"aggregator role", NodeMeta{Role: RoleAggregator, HTTPPort: 12345, PingPort: 33435, Version: "v1.4.0"}, ""},
		{"other http port", NodeMeta{Role: RoleAgent, HTTPPort: 8080, PingPort: 33435, Version: "v1.4.0"}, ""},
		{"minor differs", NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "1.9.2-rc1"}, ""},
		{"dev build", NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "dev"}, ""},
		{"empty version", NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435}, ""},
		{"other ping port", NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 40000, Version: "v1.4.0"}, reasonPingPort},
		{"major differs", NodeMeta{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v2.0.0"}, reasonMajor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, detail := compatible(local, tc.peer); got != tc.want {
				t.Fatalf("compatible: got %q (%s), want %q", got, detail, tc.want)
			}
		})
	}
}

func TestMajorVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"v1.2.3", 1, true}, {"1.2", 1, true}, {"2", 2, true}, {"v0.9.0-rc1+abc", 0, true},
		{"10-beta", 10, true}, {"dev", 0, false}, {"", 0, false}, {"v", 0, false}, {"abc123", 0, false}, {"-1", 0, false},
	} {
		got, ok := majorVersion(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("majorVersion(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []NodeMeta{
		{Role: RoleAgent, HTTPPort: 12345, PingPort: 33435, Version: "v1.0.0"},
		{Role: RoleAggregator, HTTPPort: 1, PingPort: 2},
	} {
		b, _ := m.Encode()
		f.Add(b)
	}
	f.Add([]byte{1, 1, 0, 1, 0, 1, 200})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			if metaReason(err) == "other" {
				t.Fatalf("unlabelled rejection %v", err)
			}
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", m, err)
		}
		again, err := DecodeMeta(enc)
		if err != nil || again != m {
			t.Fatalf("re-decode: got %+v, %v; want %+v", again, err, m)
		}
	})
}
