package probe_test

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/loader"
	"github.com/dnms/dnms/internal/probe"
)

// TestLabKeyedKernelReflector: with a probe key, host2's kernel reflector
// answers host1's authenticated pings (the first of each flow goes through
// userspace, which confirms the epoch), while an attacker on host1's own
// address, without the key, fires pings without an HMAC and pings with a
// made-up tag and a new epoch at host2: the kernel reflects none of them,
// counts why, and no genuine sample is lost or changed.
func TestLabKeyedKernelReflector(t *testing.T) {
	key := []byte("cluster probe key")
	var ldB atomic.Pointer[loader.Loader]
	lp := probe.NewLabPair(t, func(c *probe.Config) {
		c.Key, c.EBPF, c.Timestamps = key, true, "ebpf"
		c.Reflect = true // answers what the keyed kernel reflector declines
		c.ConfirmEpoch = func(peer netip.Addr, sport uint16, epoch uint32, rx, ack uint64) {
			if l := ldB.Load(); l != nil {
				l.ConfirmEpoch(peer, sport, epoch, rx, ack)
			}
		}
	})
	a, b := lp.Engines()
	f := lp.Fabric()
	h1, h2 := f.Host("host1"), f.Host("host2")
	attachLoader(t, lp, "host1", false, a.HandleStamp)
	keyed := func(c *loader.Config) { c.Keyed = true }
	lb := loadTC(t, f, h2, a.PingPort(), true, keyed)
	runLoader(t, lb, b.HandleStamp)
	ldB.Store(lb)
	if err := lb.SetMembers([]netip.Addr{h1.Addr, h2.Addr}); err != nil {
		t.Fatal(err)
	}

	lo, _ := a.SrcPorts()
	stop := make(chan struct{})
	fired := make(chan int)
	go func() {
		n := 0
		_ = f.Do(h1.NS, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			for seq := uint64(1); ; seq++ {
				select {
				case <-stop:
					return nil
				default:
				}
				noTag := probe.Packet{Type: probe.TypePing, SrcPort: lo, Epoch: a.Epoch(), Seq: 1<<40 + seq, T1: 1}
				badTag := noTag
				badTag.Flags, badTag.Epoch, badTag.MAC = probe.FlagHMAC, a.Epoch()+1, [16]byte{0xba, 0xd}
				for _, p := range []probe.Packet{noTag, badTag} {
					sendSpoofed(fd, netip.AddrPortFrom(h1.Addr, lo), netip.AddrPortFrom(h2.Addr, a.PingPort()), probe.AppendEncode(nil, &p))
					n++
				}
				time.Sleep(time.Millisecond) // pacing the attacker, not synchronising
			}
		})
		fired <- n
	}()
	rs := lp.PingMany(t, 300, 2*time.Millisecond)
	close(stop)
	n := <-fired
	if n == 0 {
		t.Fatal("attacker sent nothing")
	}
	kref := 0
	for _, r := range rs {
		if r.Lost {
			t.Fatalf("genuine ping lost under attack: %+v", r)
		}
		if r.KernelReflected {
			kref++
		}
	}
	if kref < len(rs)*9/10 {
		t.Errorf("only %d of %d pings reflected in the kernel", kref, len(rs))
	}
	st := lb.Status()
	if st.Reflected != uint64(kref) {
		t.Errorf("kernel reflected %d pings, %d of them genuine: it answered the attacker", st.Reflected, kref)
	}
	if st.Declined["no_hmac"] == 0 || st.Declined["epoch"] == 0 {
		t.Errorf("the attack was not seen by the kernel reflector: declined %v", st.Declined)
	}
	t.Logf("attacker sent %d; genuine: %d kernel-reflected, %d via userspace; kernel declined %v", n, kref, len(rs)-kref, st.Declined)
}

// sendSpoofed sends one UDP datagram with any source through a raw socket
// (IP_HDRINCL): the kernel fills the IPv4 checksum; UDP checksum 0 is "none".
func sendSpoofed(fd int, src, dst netip.AddrPort, payload []byte) error {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return unix.Sendto(fd, b, 0, &unix.SockaddrInet4{Addr: d4})
}
