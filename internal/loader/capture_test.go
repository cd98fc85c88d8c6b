package loader

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/probe"
)

// tap is an AF_PACKET capture on one interface with the kernel's software
// stamps (SO_TIMESTAMPNS: outgoing frames when they pass the tap in
// dev_queue_xmit, incoming ones on arrival), recording when dnms pings left
// and acks arrived, by seq, on CLOCK_MONOTONIC.
type tap struct {
	fd     int
	mu     sync.Mutex
	tx, rx map[uint64]int64
	// minOff, maxOff bound the realtime−monotonic offsets seen: a step of
	// CLOCK_REALTIME during the test makes the comparison meaningless.
	minOff, maxOff int64
	done           chan struct{}
}

func (c *tap) noteOff(off int64) {
	c.mu.Lock()
	if c.minOff == 0 || off < c.minOff {
		c.minOff = off
	}
	if off > c.maxOff {
		c.maxOff = off
	}
	c.mu.Unlock()
}

func startTap(t *testing.T, f *lab.Fabric, h lab.Host) *tap {
	t.Helper()
	c := &tap{tx: map[uint64]int64{}, rx: map[uint64]int64{}, done: make(chan struct{})}
	err := f.Do(h.NS, func() error {
		ifi, err := net.InterfaceByName(h.Ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return err
		}
		// Room for the whole test's frames even if the reader is not
		// scheduled for a while.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("tap on %s: %v", h.Name, err)
	}
	stop := make(chan struct{})
	go c.loop(stop)
	t.Cleanup(func() {
		close(stop)
		<-c.done
		unix.Close(c.fd)
	})
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *tap) loop(stop chan struct{}) {
	defer close(c.done)
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for {
		select {
		case <-stop:
			return
		default:
		}
		// Polled, never slept in: a reader asleep on the socket is woken
		// by every packet, and on a VM that wake-up (an IPI) runs between
		// the tap's TX stamp and the driver's, ~30 µs on a loaded host.
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		// The capture stamps are CLOCK_REALTIME, which this VM's clock
		// is sometimes stepped on: convert with the offset of the moment.
		off := realMinusMono()
		if off == 0 {
			continue
		}
		c.noteOff(off)
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			continue
		}
		var ts int64
		for _, cm := range cms {
			if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SO_TIMESTAMPNS_NEW && len(cm.Data) >= 16 {
				ts = int64(binary.NativeEndian.Uint64(cm.Data[0:]))*1e9 + int64(binary.NativeEndian.Uint64(cm.Data[8:])) - off
			}
		}
		f := buf[:n]
		if ts == 0 || len(f) < payloadOff+hdrLen || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[ethLen+9] != 17 ||
			binary.BigEndian.Uint16(f[ethLen+ipLen+2:]) != livePingPort {
			continue
		}
		var p probe.Packet
		if probe.Decode(f[payloadOff:], &p) != probe.RejectNone {
			continue
		}
		c.mu.Lock()
		switch p.Type {
		case probe.TypePing:
			c.tx[p.Seq] = ts
		case probe.TypeAck:
			c.rx[p.Seq] = ts
		}
		c.mu.Unlock()
	}
}

// TestLiveStampsVsCapture compares host1's eBPF stamps with a capture on the
// same interface, packet by packet. The capture's software stamps are
// CLOCK_REALTIME; they are moved to CLOCK_MONOTONIC with the offset between
// the clocks when they are read. It reports the distribution and fails only on gross
// disagreement (a shared 2-core machine under load has tails).
func TestLiveStampsVsCapture(t *testing.T) {
	f, hA, hB := liveFabric(t)
	cfg := DefaultConfig()
	cfg.Ifaces = []string{hB.Ifname}
	liveLoader(t, f, hB, cfg)
	cfg.Ifaces = []string{hA.Ifname}
	cfg.ArrivalStamps = true
	lA, stA := liveLoader(t, f, hA, cfg)
	c := startTap(t, f, hA)
	c.noteOff(realMinusMono())

	sendA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, liveSport))
	recvA := udpIn(t, f, hA, fmt.Sprintf("%s:%d", hA.Addr, livePingPort))
	dst := &net.UDPAddr{IP: hB.Addr.AsSlice(), Port: livePingPort}
	const n = 200
	epoch := uint32(time.Now().UnixNano())
	buf := make([]byte, 2048)
	for seq := uint64(1); seq <= n; seq++ {
		p := probe.Packet{Type: probe.TypePing, SrcPort: liveSport, Epoch: epoch, Seq: seq, T1: monotonicNow()}
		if _, err := sendA.WriteTo(encode(p), dst); err != nil {
			t.Fatal(err)
		}
		recvA.SetReadDeadline(time.Now().Add(waitFor))
		if _, _, err := recvA.ReadFromUDP(buf); err != nil {
			t.Fatalf("ack %d: %v", seq, err)
		}
	}
	local := netip.AddrPortFrom(hA.Addr, liveSport)
	stA.wait(t, "last RX_ACK", func(s probe.Stamp) bool { return s.Kind == probe.StampRxAck && s.Seq == n })
	deadline := time.Now().Add(waitFor)
	for {
		c.mu.Lock()
		got := len(c.tx) >= n && len(c.rx) >= n
		c.mu.Unlock()
		if got || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}

	c.noteOff(realMinusMono())
	c.mu.Lock()
	step := time.Duration(c.maxOff - c.minOff)
	c.mu.Unlock()
	var txErr, rxErr []time.Duration
	stA.mu.Lock()
	c.mu.Lock()
	for _, s := range stA.s {
		if s.Local != local || s.Remote != hB.Addr {
			continue
		}
		switch capT, ok := int64(0), false; s.Kind {
		case probe.StampTx:
			if capT, ok = c.tx[s.Seq]; ok {
				txErr = append(txErr, time.Duration(capT-s.Time))
			}
		case probe.StampRxAck:
			if capT, ok = c.rx[s.Seq]; ok {
				rxErr = append(rxErr, time.Duration(s.Time-capT))
			}
		}
	}
	c.mu.Unlock()
	stA.mu.Unlock()
	if len(txErr) < n/2 || len(rxErr) < n/2 {
		t.Fatalf("matched %d TX and %d RX of %d with the capture", len(txErr), len(rxErr), n)
	}
	abs := func(ds []time.Duration) []time.Duration {
		for i, d := range ds {
			ds[i] = max(d, -d)
		}
		slices.Sort(ds)
		return ds
	}
	txErr, rxErr = abs(txErr), abs(rxErr)
	pct := func(ds []time.Duration, p float64) time.Duration { return ds[int(p*float64(len(ds)-1))] }
	t.Logf("|TC egress stamp − capture|: p50 %v p90 %v p99 %v max %v (n=%d)",
		pct(txErr, .5), pct(txErr, .9), pct(txErr, .99), txErr[len(txErr)-1], len(txErr))
	t.Logf("|RX stamp − capture|:        p50 %v p90 %v p99 %v max %v (n=%d, %d from arrival stamps)",
		pct(rxErr, .5), pct(rxErr, .9), pct(rxErr, .99), rxErr[len(rxErr)-1], len(rxErr), lA.Status().RxArrivalStamps)
	if step > 10*time.Microsecond {
		t.Logf("CLOCK_REALTIME moved by %v against CLOCK_MONOTONIC during the test: the capture's stamps cannot be compared; not judging", step)
		return
	}
	// Every ack got an arrival stamp (the tap asked for timestamps, so
	// the stack stamps every packet) and the program's clock pair placed it
	// on the monotonic clock.
	if arr := lA.Status().RxArrivalStamps; arr < n {
		t.Errorf("%d of %d ack stamps are arrival stamps", arr, n)
	}
	if pct(txErr, .5) > 50*time.Microsecond || pct(rxErr, .5) > 50*time.Microsecond {
		t.Errorf("eBPF stamps disagree with the capture: TX p50 %v, RX p50 %v", pct(txErr, .5), pct(rxErr, .5))
	}
}

// realMinusMono measures CLOCK_REALTIME − CLOCK_MONOTONIC, reading the
// monotonic clock on both sides of the real one. A preempted reading (vCPUs
// stall for tens of µs) would be off by half the stall, so it keeps the
// tightest of a few; 0 if none is tight.
func realMinusMono() int64 {
	const tries, tight = 5, int64(5 * time.Microsecond)
	var (
		best  int64
		width = int64(-1)
	)
	for range tries {
		var m1, r, m2 unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1) != nil ||
			unix.ClockGettime(unix.CLOCK_REALTIME, &r) != nil ||
			unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2) != nil {
			return 0
		}
		if w := m2.Nano() - m1.Nano(); width < 0 || w < width {
			best, width = r.Nano()-(m1.Nano()+m2.Nano())/2, w
		}
	}
	if width > tight {
		return 0
	}
	return best
}
