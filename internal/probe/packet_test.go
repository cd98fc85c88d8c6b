package probe

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func samplePacket() Packet {
	return Packet{
		Type: TypePing, TTL: 0, SrcPort: 33500, Epoch: 0xdeadbeef, Seq: 42,
		T1: 1_000_000_123, T2: 2_000_000_456, T3: 2_000_010_789, RxCount: 41, AckCount: 40,
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
		mod  func(p *Packet)
	}{
		{"ping no key", nil, func(p *Packet) {}},
		{"ping keyed", []byte("cluster-key"), func(p *Packet) {}},
		{"ack keyed", []byte("k"), func(p *Packet) { p.Type = TypeAck }},
		{"trace padded", nil, func(p *Packet) { p.Type = TypeTrace; p.TTL = 7; p.PadLen = 7 }},
		{"trace-ack keyed padded", []byte("k"), func(p *Packet) { p.Type = TypeTraceAck; p.TTL = 255; p.PadLen = MaxPadLen }},
		{"negative times", nil, func(p *Packet) { p.T1 = -1; p.T2 = -5 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCodec(tc.key)
			p := samplePacket()
			tc.mod(&p)
			b := c.AppendEncode(nil, &p)
			if len(b) != p.Len() {
				t.Fatalf("len %d, want %d", len(b), p.Len())
			}
			var q Packet
			if r := c.Decode(b, &q); r != RejectNone {
				t.Fatalf("decode: %v", r)
			}
			if q != p {
				t.Fatalf("round trip:\n got %+v\nwant %+v", q, p)
			}
			// Re-encoding the decoded packet without the key gives the same bytes.
			if b2 := AppendEncode(nil, &q); !bytes.Equal(b, b2) {
				t.Fatalf("re-encode differs")
			}
		})
	}
}

func TestWireLayout(t *testing.T) {
	p := samplePacket()
	b := AppendEncode(nil, &p)
	want := map[int]uint64{16: 42, 24: 1_000_000_123, 32: 2_000_000_456, 40: 2_000_010_789, 48: 41, 56: 40}
	for off, v := range want {
		if got := binary.BigEndian.Uint64(b[off:]); got != v {
			t.Errorf("offset %d: %d, want %d", off, got, v)
		}
	}
	if string(b[0:4]) != "DNMS" || b[4] != 1 || b[5] != 1 || binary.BigEndian.Uint16(b[8:]) != 33500 ||
		binary.BigEndian.Uint32(b[12:]) != 0xdeadbeef {
		t.Errorf("header bytes wrong: % x", b[:16])
	}
}

func TestRejectReasons(t *testing.T) {
	key := []byte("cluster-key")
	good := func(mod func(p *Packet)) []byte {
		p := samplePacket()
		if mod != nil {
			mod(&p)
		}
		return NewCodec(key).AppendEncode(nil, &p)
	}
	set := func(b []byte, off int, v byte) []byte { b[off] = v; return b }
	tests := []struct {
		name string
		b    []byte
		key  []byte
		want RejectReason
	}{
		{"empty", nil, nil, RejectShort},
		{"short header", good(nil)[:63], nil, RejectShort},
		{"short hmac", good(nil)[:70], nil, RejectShort},
		{"short padding", good(func(p *Packet) { p.PadLen = 10 })[:85], nil, RejectShort},
		{"oversized", make([]byte, MaxLen+1), nil, RejectOversized},
		{"trailing bytes", append(good(nil), 0), nil, RejectOversized},
		{"padLen too big", func() []byte { b := good(nil); binary.BigEndian.PutUint16(b[10:], 300); return b }(), nil, RejectOversized},
		{"magic", set(good(nil), 0, 'X'), nil, RejectMagic},
		{"version", set(good(nil), 4, 2), nil, RejectVersion},
		{"type zero", set(good(nil), 5, 0), nil, RejectType},
		{"type five", set(good(nil), 5, 5), nil, RejectType},
		{"hmac wrong", set(good(nil), 70, 0), key, RejectHMAC},
		{"hmac covers seq", set(good(nil), 23, 9), key, RejectHMAC},
		{"hmac covers t1", set(good(nil), 31, 9), key, RejectHMAC},
		{"hmac missing", func() []byte { p := samplePacket(); return AppendEncode(nil, &p) }(), key, RejectHMAC},
		{"hmac other key", good(nil), []byte("other"), RejectHMAC},
		{"no key accepts", good(nil), nil, RejectNone},
		{"reflector rewrite keeps hmac", func() []byte {
			b := good(nil)
			b[5] = byte(TypeAck)
			b[6] |= FlagKernel
			binary.BigEndian.PutUint64(b[32:], 7)
			binary.BigEndian.PutUint64(b[56:], 7)
			return b
		}(), key, RejectNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p Packet
			if got := NewCodec(tc.key).Decode(tc.b, &p); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRejectReasonString(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range AllRejectReasons() {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Fatalf("reason %d: bad or duplicate name %q", r, s)
		}
		seen[s] = true
	}
	if RejectReason(200).String() != "unknown" {
		t.Fatal("out of range reason")
	}
}

func TestNoAllocs(t *testing.T) {
	c := NewCodec([]byte("key"))
	p := samplePacket()
	buf := make([]byte, 0, MaxLen)
	var q Packet
	n := testing.AllocsPerRun(100, func() {
		b := c.AppendEncode(buf[:0], &p)
		if c.Decode(b, &q) != RejectNone {
			t.Fatal("decode")
		}
	})
	if n != 0 {
		t.Fatalf("%v allocs per encode+decode", n)
	}
}

func FuzzDecode(f *testing.F) {
	p := samplePacket()
	f.Add(AppendEncode(nil, &p))
	f.Add(NewCodec([]byte("k")).AppendEncode(nil, &p))
	p.Type, p.PadLen, p.TTL = TypeTrace, 5, 5
	f.Add(AppendEncode(nil, &p))
	f.Add([]byte("DNMS"))
	f.Add([]byte{})
	c := NewCodec([]byte("k"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var q Packet
		r := Decode(b, &q)
		_ = c.Decode(b, &q)
		if r != RejectNone {
			return
		}
		// Accepted packets re-encode to exactly the input except padding
		// content, which is not checked on decode.
		out := AppendEncode(nil, &q)
		if len(out) != len(b) {
			t.Fatalf("re-encode length %d, input %d", len(out), len(b))
		}
		n := q.Len() - int(q.PadLen)
		if !bytes.Equal(out[:n], b[:n]) {
			t.Fatalf("re-encode differs")
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	for _, key := range []string{"", "key"} {
		b.Run("key="+key, func(b *testing.B) {
			c := NewCodec([]byte(key))
			p := samplePacket()
			buf := make([]byte, 0, MaxLen)
			b.ReportAllocs()
			for b.Loop() {
				buf = c.AppendEncode(buf[:0], &p)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, key := range []string{"", "key"} {
		b.Run("key="+key, func(b *testing.B) {
			c := NewCodec([]byte(key))
			p := samplePacket()
			buf := c.AppendEncode(nil, &p)
			var q Packet
			b.ReportAllocs()
			for b.Loop() {
				if c.Decode(buf, &q) != RejectNone {
					b.Fatal("decode")
				}
			}
		})
	}
}
