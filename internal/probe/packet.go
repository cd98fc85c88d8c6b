package probe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// Wire constants (see the package doc for the layout).
const (
	Magic   uint32 = 0x444E4D53 // "DNMS"
	Version uint8  = 1

	HeaderLen = 64 // fixed header, without HMAC and padding
	MACLen    = 16 // truncated HMAC-SHA256
	// MaxPadLen bounds padLen: a trace probe pads by its TTL (≤ 255).
	MaxPadLen = 255
	// MaxLen is the largest valid dnms datagram payload.
	MaxLen = HeaderLen + MACLen + MaxPadLen

	// macCovered is how many leading bytes the HMAC covers.
	macCovered = 32
)

// Type is the dnms packet type (byte 5).
type Type uint8

const (
	TypePing     Type = 1
	TypeAck      Type = 2
	TypeTrace    Type = 3
	TypeTraceAck Type = 4
)

func (t Type) String() string {
	switch t {
	case TypePing:
		return "ping"
	case TypeAck:
		return "ack"
	case TypeTrace:
		return "trace"
	case TypeTraceAck:
		return "trace-ack"
	}
	return "unknown"
}

// Flag bits (byte 6).
const (
	FlagHMAC   uint8 = 1 << 0 // bytes 64..79 hold the HMAC
	FlagKernel uint8 = 1 << 1 // reflected by the in-kernel (eBPF) reflector
)

// Packet is one decoded dnms header. It is a plain value: Decode fills a
// caller's Packet and AppendEncode writes one without allocating.
type Packet struct {
	Type     Type
	Flags    uint8
	TTL      uint8
	SrcPort  uint16
	PadLen   uint16
	Epoch    uint32
	Seq      uint64
	T1       int64
	T2       int64
	T3       int64
	RxCount  uint64
	AckCount uint64
	MAC      [MACLen]byte // valid iff Flags&FlagHMAC
}

// Len is the encoded length of p.
func (p *Packet) Len() int {
	n := HeaderLen + int(p.PadLen)
	if p.Flags&FlagHMAC != 0 {
		n += MACLen
	}
	return n
}

// RejectReason says why a datagram was not accepted. The zero value means
// accepted. Every reason is counted in dnms_packets_rejected_total{reason}.
type RejectReason uint8

const (
	RejectNone        RejectReason = iota
	RejectShort                    // fewer bytes than the header (and HMAC, padding) need
	RejectOversized                // more bytes than MaxLen or than the header announces
	RejectMagic                    // not "DNMS"
	RejectVersion                  // unknown version
	RejectType                     // unknown packet type
	RejectHMAC                     // HMAC missing (a key is configured) or wrong
	RejectReplay                   // duplicate or replayed sequence number (matcher)
	RejectUnknownFlow              // an ack for a flow or epoch we never probed (matcher)
	numRejectReasons
)

var rejectNames = [numRejectReasons]string{
	RejectNone:        "none",
	RejectShort:       "short",
	RejectOversized:   "oversized",
	RejectMagic:       "magic",
	RejectVersion:     "version",
	RejectType:        "type",
	RejectHMAC:        "hmac",
	RejectReplay:      "replay",
	RejectUnknownFlow: "unknown_flow",
}

func (r RejectReason) String() string {
	if r < numRejectReasons {
		return rejectNames[r]
	}
	return "unknown"
}

// AllRejectReasons lists every non-zero reason (for pre-creating metric series).
func AllRejectReasons() []RejectReason {
	rs := make([]RejectReason, 0, numRejectReasons-1)
	for r := RejectNone + 1; r < numRejectReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Decode parses b into p without checking any HMAC (a reflector needs no
// key). It never panics and never allocates; on rejection p is partially
// filled and must not be used.
func Decode(b []byte, p *Packet) RejectReason {
	if len(b) > MaxLen {
		return RejectOversized
	}
	if len(b) < HeaderLen {
		return RejectShort
	}
	if binary.BigEndian.Uint32(b[0:4]) != Magic {
		return RejectMagic
	}
	if b[4] != Version {
		return RejectVersion
	}
	t := Type(b[5])
	if t < TypePing || t > TypeTraceAck {
		return RejectType
	}
	p.Type = t
	p.Flags = b[6]
	p.TTL = b[7]
	p.SrcPort = binary.BigEndian.Uint16(b[8:10])
	p.PadLen = binary.BigEndian.Uint16(b[10:12])
	p.Epoch = binary.BigEndian.Uint32(b[12:16])
	p.Seq = binary.BigEndian.Uint64(b[16:24])
	p.T1 = int64(binary.BigEndian.Uint64(b[24:32]))
	p.T2 = int64(binary.BigEndian.Uint64(b[32:40]))
	p.T3 = int64(binary.BigEndian.Uint64(b[40:48]))
	p.RxCount = binary.BigEndian.Uint64(b[48:56])
	p.AckCount = binary.BigEndian.Uint64(b[56:64])
	if p.PadLen > MaxPadLen {
		return RejectOversized
	}
	want := p.Len()
	if len(b) < want {
		return RejectShort
	}
	if len(b) > want {
		return RejectOversized
	}
	if p.Flags&FlagHMAC != 0 {
		copy(p.MAC[:], b[HeaderLen:HeaderLen+MACLen])
	} else {
		p.MAC = [MACLen]byte{}
	}
	return RejectNone
}

// AppendEncode appends the encoding of p to dst. The HMAC bytes are copied
// from p.MAC as they are (the reflector's case); use Codec.AppendEncode to
// compute them. It allocates only if dst lacks capacity.
func AppendEncode(dst []byte, p *Packet) []byte {
	n := p.Len()
	off := len(dst)
	if cap(dst)-off < n {
		nd := make([]byte, off, off+n)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:off+n]
	b := dst[off:]
	binary.BigEndian.PutUint32(b[0:4], Magic)
	b[4] = Version
	b[5] = byte(p.Type)
	b[6] = p.Flags
	b[7] = p.TTL
	binary.BigEndian.PutUint16(b[8:10], p.SrcPort)
	binary.BigEndian.PutUint16(b[10:12], p.PadLen)
	binary.BigEndian.PutUint32(b[12:16], p.Epoch)
	binary.BigEndian.PutUint64(b[16:24], p.Seq)
	binary.BigEndian.PutUint64(b[24:32], uint64(p.T1))
	binary.BigEndian.PutUint64(b[32:40], uint64(p.T2))
	binary.BigEndian.PutUint64(b[40:48], uint64(p.T3))
	binary.BigEndian.PutUint64(b[48:56], p.RxCount)
	binary.BigEndian.PutUint64(b[56:64], p.AckCount)
	rest := b[HeaderLen:]
	if p.Flags&FlagHMAC != 0 {
		copy(rest, p.MAC[:])
		rest = rest[MACLen:]
	}
	clear(rest)
	return dst
}

// Codec adds the cluster probe key: it computes the HMAC on encode and checks
// it on decode. With an empty key it neither adds nor checks HMACs. A Codec
// is not safe for concurrent use (it reuses one hash state); give each
// goroutine its own with Clone.
type Codec struct {
	key []byte
	mac hash.Hash
	buf [macCovered]byte
	sum [sha256.Size]byte
}

// NewCodec returns a codec for key (nil or empty: no HMAC).
func NewCodec(key []byte) *Codec {
	c := &Codec{key: append([]byte(nil), key...)}
	if len(c.key) > 0 {
		c.mac = hmac.New(sha256.New, c.key)
	}
	return c
}

// Clone returns an independent codec with the same key.
func (c *Codec) Clone() *Codec { return NewCodec(c.key) }

// Keyed reports whether the codec adds and checks HMACs.
func (c *Codec) Keyed() bool { return c.mac != nil }

// computeMAC fills c.sum with the HMAC over the first 32 encoded bytes of a
// packet with type and flags zeroed.
func (c *Codec) computeMAC(b []byte) []byte {
	copy(c.buf[:], b[:macCovered])
	c.buf[5], c.buf[6] = 0, 0
	c.mac.Reset()
	c.mac.Write(c.buf[:])
	return c.mac.Sum(c.sum[:0])[:MACLen]
}

// AppendEncode appends p, setting FlagHMAC and p.MAC when the codec is keyed.
func (c *Codec) AppendEncode(dst []byte, p *Packet) []byte {
	if c.mac == nil {
		return AppendEncode(dst, p)
	}
	p.Flags |= FlagHMAC
	off := len(dst)
	dst = AppendEncode(dst, p)
	b := dst[off:]
	copy(p.MAC[:], c.computeMAC(b))
	copy(b[HeaderLen:HeaderLen+MACLen], p.MAC[:])
	return dst
}

// Decode is Decode plus the HMAC check when the codec is keyed: a packet
// without HMAC or with a wrong one is RejectHMAC.
func (c *Codec) Decode(b []byte, p *Packet) RejectReason {
	if r := Decode(b, p); r != RejectNone {
		return r
	}
	if c.mac == nil {
		return RejectNone
	}
	if p.Flags&FlagHMAC == 0 {
		return RejectHMAC
	}
	if !hmac.Equal(c.computeMAC(b), p.MAC[:]) {
		return RejectHMAC
	}
	return RejectNone
}
