package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Roles a member can advertise.
const (
	RoleAgent      = "agent"
	RoleAggregator = "aggregator"
)

// MetaVersion is the layout version of the encoded NodeMeta. A node that
// advertises another layout version is incompatible.
const MetaVersion = 1

// MetaMaxSize is memberlist's limit on node meta.
const MetaMaxSize = memberlist.MetaMaxSize

// metaFixedLen is the fixed part of layout 1: version, role, http port, ping
// port, length of the software version string.
const metaFixedLen = 1 + 1 + 2 + 2 + 1

// Meta decode rejections. Every error DecodeMeta returns wraps exactly one of
// these, so the reason can be counted with a bounded label.
var (
	ErrMetaEmpty     = errors.New("empty meta")
	ErrMetaTooLarge  = errors.New("meta larger than limit")
	ErrMetaVersion   = errors.New("unknown meta version")
	ErrMetaTruncated = errors.New("truncated meta")
	ErrMetaRole      = errors.New("unknown role")
	ErrMetaField     = errors.New("invalid meta field")
)

// NodeMeta is what a member advertises about itself through memberlist.
//
// Wire layout (version 1, big endian):
//
//	0     meta version (1)
//	1     role: 1 agent, 2 aggregator
//	2..3  HTTP port
//	4..5  ping port
//	6     n = length of the software version string (≤ 255)
//	7..   software version, n bytes of UTF-8
//
// Optional trailing fields (minor additions to layout 1: older nodes ignore
// them, and a newer node reading older meta leaves them zero):
//
//	+0    a = length of the HTTP advertise address: 0, 4 or 16
//	+1..  HTTP advertise address, a bytes (absent or 0: same as the gossip
//	      address)
//	+0..7 instance: the process's start time in Unix nanoseconds (absent,
//	      or fewer than 8 bytes left: 0, unknown)
//	+8    flags (absent: 0): bit 0 the member is leaving on purpose (set
//	      just before a graceful leave, so peers forget it at once rather
//	      than probing it through the failed-peer grace); other bits ignored
//	...   ignored: later additions are appended here
type NodeMeta struct {
	Role     string
	HTTPPort uint16
	PingPort uint16
	Version  string
	// HTTPAddr is where the member's API is reached (-httpAdvertise); the
	// zero Addr means the member's gossip address.
	HTTPAddr netip.Addr
	// Instance tells this process from an earlier one of the same member
	// (its start time in Unix nanoseconds): a peer whose instance changed
	// restarted. 0 is unknown (a node that predates the field).
	Instance uint64
	// Leaving is set by a member about to leave gracefully: its departure
	// is not a failure.
	Leaving bool
}

// metaFlagLeaving is bit 0 of the flags byte.
const metaFlagLeaving = 1

func roleCode(role string) (byte, bool) {
	switch role {
	case RoleAgent:
		return 1, true
	case RoleAggregator:
		return 2, true
	}
	return 0, false
}

func roleName(code byte) (string, bool) {
	switch code {
	case 1:
		return RoleAgent, true
	case 2:
		return RoleAggregator, true
	}
	return "", false
}

// Encode returns the wire form of m, or an error when m cannot be encoded
// within MetaMaxSize.
func (m NodeMeta) Encode() ([]byte, error) {
	rc, ok := roleCode(m.Role)
	if !ok {
		return nil, fmt.Errorf("encode node meta: %w %q", ErrMetaRole, m.Role)
	}
	if len(m.Version) > 255 {
		return nil, fmt.Errorf("encode node meta: %w: version string is %d bytes, max 255", ErrMetaField, len(m.Version))
	}
	if !utf8.ValidString(m.Version) {
		return nil, fmt.Errorf("encode node meta: %w: version string is not UTF-8", ErrMetaField)
	}
	b := make([]byte, metaFixedLen, metaFixedLen+len(m.Version))
	b[0] = MetaVersion
	b[1] = rc
	binary.BigEndian.PutUint16(b[2:], m.HTTPPort)
	binary.BigEndian.PutUint16(b[4:], m.PingPort)
	b[6] = byte(len(m.Version))
	b = append(b, m.Version...)
	b = appendAddr(b, m.HTTPAddr)
	if m.Instance != 0 || m.Leaving {
		b = binary.BigEndian.AppendUint64(b, m.Instance)
	}
	if m.Leaving {
		b = append(b, metaFlagLeaving)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("encode node meta: %w: %d > %d bytes", ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	return b, nil
}

// DecodeMeta parses the wire form. It never panics on arbitrary input and
// rejects empty, oversize, truncated, unknown-version or unknown-role meta.
func DecodeMeta(b []byte) (NodeMeta, error) {
	switch {
	case len(b) == 0:
		return NodeMeta{}, fmt.Errorf("decode node meta: %w", ErrMetaEmpty)
	case len(b) > MetaMaxSize:
		return NodeMeta{}, fmt.Errorf("decode node meta: %w: %d > %d bytes", ErrMetaTooLarge, len(b), MetaMaxSize)
	case b[0] != MetaVersion:
		return NodeMeta{}, fmt.Errorf("decode node meta: %w %d (want %d)", ErrMetaVersion, b[0], MetaVersion)
	case len(b) < metaFixedLen:
		return NodeMeta{}, fmt.Errorf("decode node meta: %w: %d bytes, need %d", ErrMetaTruncated, len(b), metaFixedLen)
	}
	role, ok := roleName(b[1])
	if !ok {
		return NodeMeta{}, fmt.Errorf("decode node meta: %w code %d", ErrMetaRole, b[1])
	}
	n := int(b[6])
	if len(b) < metaFixedLen+n {
		return NodeMeta{}, fmt.Errorf("decode node meta: %w: version string needs %d bytes, have %d", ErrMetaTruncated, n, len(b)-metaFixedLen)
	}
	v := string(b[metaFixedLen : metaFixedLen+n])
	if !utf8.ValidString(v) {
		return NodeMeta{}, fmt.Errorf("decode node meta: %w: version string is not UTF-8", ErrMetaField)
	}
	m := NodeMeta{
		Role:     role,
		HTTPPort: binary.BigEndian.Uint16(b[2:]),
		PingPort: binary.BigEndian.Uint16(b[4:]),
		Version:  v,
	}
	if m.HTTPPort == 0 || m.PingPort == 0 {
		return NodeMeta{}, fmt.Errorf("decode node meta: %w: zero port (http %d, ping %d)", ErrMetaField, m.HTTPPort, m.PingPort)
	}
	var err error
	rest := b[metaFixedLen+n:]
	if m.HTTPAddr, err = decodeAddr(rest); err != nil {
		return NodeMeta{}, fmt.Errorf("decode node meta: HTTP address: %w", err)
	}
	if len(rest) > 0 {
		rest = rest[1+int(rest[0]):]
	}
	if len(rest) >= 8 {
		m.Instance = binary.BigEndian.Uint64(rest)
	}
	if len(rest) >= 9 {
		m.Leaving = rest[8]&metaFlagLeaving != 0
	}
	return m, nil
}

// appendAddr appends an optional address as a length byte and its bytes.
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, 0)
	}
	a = a.Unmap()
	b = append(b, byte(a.BitLen()/8))
	return append(b, a.AsSlice()...)
}

// decodeAddr reads what appendAddr wrote at the start of b; an empty b
// (meta from a node that predates the field) is the zero Addr.
func decodeAddr(b []byte) (netip.Addr, error) {
	if len(b) == 0 || b[0] == 0 {
		return netip.Addr{}, nil
	}
	n := int(b[0])
	if n != 4 && n != 16 {
		return netip.Addr{}, fmt.Errorf("%w: address length %d", ErrMetaField, n)
	}
	if len(b) < 1+n {
		return netip.Addr{}, fmt.Errorf("%w: address needs %d bytes, have %d", ErrMetaTruncated, n, len(b)-1)
	}
	a, _ := netip.AddrFromSlice(b[1 : 1+n])
	if a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%w: address %s", ErrMetaField, a)
	}
	return a.Unmap(), nil
}

// metaReason is the bounded label for a decode error.
func metaReason(err error) string {
	for _, e := range []struct {
		err    error
		reason string
	}{
		{ErrMetaEmpty, "empty"},
		{ErrMetaTooLarge, "too_large"},
		{ErrMetaVersion, "meta_version"},
		{ErrMetaTruncated, "truncated"},
		{ErrMetaRole, "role"},
		{ErrMetaField, "field"},
	} {
		if errors.Is(err, e.err) {
			return e.reason
		}
	}
	return "other"
}

// Incompatibility reasons, the values of the reason label.
const (
	reasonPingPort = "ping_port"
	reasonMajor    = "major_version"
)

// compatible reports why a peer advertising m cannot work with us (local),
// or "" when it can. Every node uses the same ping port (acks are mirrored
// to it), and nodes of different major versions may speak different probe
// wire formats.
func compatible(local, m NodeMeta) (reason string, detail string) {
	if m.PingPort != local.PingPort {
		return reasonPingPort, fmt.Sprintf("ping port %d, ours %d", m.PingPort, local.PingPort)
	}
	lm, lok := majorVersion(local.Version)
	pm, pok := majorVersion(m.Version)
	if lok && pok && lm != pm {
		return reasonMajor, fmt.Sprintf("version %q, ours %q", m.Version, local.Version)
	}
	return "", ""
}

// majorVersion extracts the major number of "v1.2.3", "1.2", "2" or
// "v1.2.3-rc1+abc". Anything else (e.g. "dev", a git hash) has no major and
// is treated as compatible with everything: development builds must be able
// to join a cluster.
func majorVersion(v string) (int, bool) {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, ".-+"); i >= 0 {
		v = v[:i]
	}
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
