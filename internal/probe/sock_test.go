package probe

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestTxPacket(t *testing.T) {
	p := samplePacket()
	payload := AppendEncode(nil, &p)
	ip := make([]byte, 20+8)
	ip[0], ip[9] = 0x45, unix.IPPROTO_UDP
	copy(ip[16:20], []byte{198, 18, 0, 2})
	eth := make([]byte, 14)
	binary.BigEndian.PutUint16(eth[12:], 0x0800)
	for name, b := range map[string][]byte{
		"ethernet": append(append(append([]byte(nil), eth...), ip...), payload...),
		"bare ip":  append(append([]byte(nil), ip...), payload...),
	} {
		dst, pl, ok := txPacket(b)
		if !ok || dst != netip.MustParseAddr("198.18.0.2") || string(pl) != string(payload) {
			t.Errorf("%s: %v %v", name, dst, ok)
		}
	}
	if _, _, ok := txPacket([]byte{0x45}); ok {
		t.Error("accepted a 1-byte packet")
	}
}

func TestParseCmsgs(t *testing.T) {
	oob := make([]byte, 256)
	// SO_TIMESTAMPING_NEW with ts[0] = 5 s 7 ns.
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_TIMESTAMPING_NEW
	h.SetLen(unix.CmsgLen(48))
	binary.NativeEndian.PutUint64(oob[unix.CmsgLen(0):], 5)
	binary.NativeEndian.PutUint64(oob[unix.CmsgLen(0)+8:], 7)
	off := unix.CmsgSpace(48)
	// IP_RECVERR: ICMP time exceeded from 198.18.0.1.
	h2 := (*unix.Cmsghdr)(unsafe.Pointer(&oob[off]))
	h2.Level, h2.Type = unix.IPPROTO_IP, unix.IP_RECVERR
	h2.SetLen(unix.CmsgLen(sizeofSockExtendedErr + 16))
	ee := (*unix.SockExtendedErr)(unsafe.Pointer(&oob[off+unix.CmsgLen(0)]))
	ee.Origin, ee.Type = unix.SO_EE_ORIGIN_ICMP, 11
	sa := oob[off+unix.CmsgLen(0)+sizeofSockExtendedErr:]
	binary.NativeEndian.PutUint16(sa, unix.AF_INET)
	copy(sa[4:8], []byte{198, 18, 0, 1})
	n := off + unix.CmsgSpace(sizeofSockExtendedErr+16)
	ci := parseCmsgs(oob[:n])
	if ci.stamp != 5e9+7 || !ci.hasErr || ci.ee.Type != 11 || ci.offender != netip.MustParseAddr("198.18.0.1") {
		t.Fatalf("%+v", ci)
	}
}

// Kernel-provided bytes are parsed too: neither parser may panic on any input.
func FuzzTxPacket(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 0})
	f.Add(make([]byte, 14))
	f.Fuzz(func(t *testing.T, b []byte) { txPacket(b) })
}

func FuzzParseCmsgs(f *testing.F) {
	f.Add(make([]byte, 16))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { parseCmsgs(b) })
}
