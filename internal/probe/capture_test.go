package probe

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// capture is an AF_PACKET tap on one interface with kernel receive stamps
// (SO_TIMESTAMPNS, taken when the frame passes the tap: for outgoing frames
// at dev_queue_xmit, for incoming ones at netif_receive). It records the
// capture time of our pings leaving and of the acks arriving, by flow and
// seq, on the realtime clock.
type capture struct {
	fd    int
	local netip.Addr
	mu    sync.Mutex
	tx    map[capKey]int64
	rx    map[capKey]capAck
	raw   map[capKey][2][]byte // dnms payloads: [0] ping, [1] ack
	// Trace probes and the ICMP errors quoting them, by (peer, port, TTL):
	// the tests trace each flow once.
	traceTx, traceICMP map[capKey]int64
	done               chan struct{}
}

type capKey struct {
	peer netip.Addr
	port uint16
	seq  uint64
}

type capAck struct {
	t      int64
	t2, t3 int64
}

func startCapture(t testing.TB, f *lab.Fabric, h lab.Host) *capture {
	t.Helper()
	return startCaptureOn(t, f, h.NS, h.Ifname, h.Addr)
}

// startRouterCapture taps the router's end of host h's access link, in the
// router's namespace: h's pings are stamped when the router receives them
// and its acks when the router sends them, after the namespace crossing
// and the host's whole stack, so nothing of the host (its TC hooks, its
// stamps, its scheduling) is in the reference.
func startRouterCapture(t testing.TB, f *lab.Fabric, h lab.Host) *capture {
	t.Helper()
	for _, l := range f.Links {
		for _, e := range [][2]lab.Endpoint{{l.A, l.B}, {l.B, l.A}} {
			if e[1].Node == h.Name {
				return startCaptureOn(t, f, e[0].NS, e[0].Ifname, h.Addr)
			}
		}
	}
	t.Fatalf("no access link of %s", h.Name)
	return nil
}

// startCaptureOn taps interface ifname in namespace ns for the probes of
// the host with address local.
func startCaptureOn(t testing.TB, f *lab.Fabric, ns, ifname string, local netip.Addr) *capture {
	t.Helper()
	c := &capture{local: local, tx: map[capKey]int64{}, rx: map[capKey]capAck{}, raw: map[capKey][2][]byte{},
		traceTx: map[capKey]int64{}, traceICMP: map[capKey]int64{}, done: make(chan struct{})}
	err := f.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		idx, err := ifindex(fd, ifname)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", ifname, ns, err)
	}
	go c.loop()
	t.Cleanup(c.stop)
	return c
}

func ifindex(fd int, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

func (c *capture) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	unix.Close(c.fd)
}

func (c *capture) loop() {
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for {
		select {
		case <-c.done:
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
		var ts int64
		cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, cm := range cms {
			if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SO_TIMESTAMPNS_NEW && len(cm.Data) >= 16 {
				ts = int64(binary.NativeEndian.Uint64(cm.Data[0:8]))*1e9 + int64(binary.NativeEndian.Uint64(cm.Data[8:16]))
			}
		}
		c.frame(buf[:n], ts)
	}
}

func (c *capture) frame(b []byte, ts int64) {
	if len(b) < 14+20+8 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 {
		return
	}
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	if ip[9] == unix.IPPROTO_ICMP {
		c.icmp(ip[ihl:], dst, ts)
		return
	}
	udp := ip[ihl:]
	if ip[9] != unix.IPPROTO_UDP || len(udp) < 8 {
		return
	}
	sport := binary.BigEndian.Uint16(udp[0:2])
	var p Packet
	if Decode(udp[8:], &p) != RejectNone {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case p.Type == TypeTrace && src == c.local:
		c.traceTx[capKey{dst, sport, uint64(p.TTL)}] = ts
	case p.Type == TypePing && src == c.local:
		k := capKey{dst, sport, p.Seq}
		c.tx[k] = ts
		r := c.raw[k]
		r[0] = append([]byte(nil), udp[8:]...)
		c.raw[k] = r
	case p.Type == TypeAck && dst == c.local:
		k := capKey{src, sport, p.Seq}
		c.rx[k] = capAck{t: ts, t2: p.T2, t3: p.T3}
		r := c.raw[k]
		r[1] = append([]byte(nil), udp[8:]...)
		c.raw[k] = r
	}
}

// icmp records an ICMP time exceeded or destination unreachable to us that
// quotes a trace probe's dnms header up to its TTL.
func (c *capture) icmp(m []byte, to netip.Addr, ts int64) {
	if to != c.local || len(m) < 8+20 || (m[0] != 11 && m[0] != 3) {
		return
	}
	q := m[8:]
	qihl := int(q[0]&0xf) * 4
	if q[9] != unix.IPPROTO_UDP || len(q) < qihl+8+8 {
		return
	}
	udp := q[qihl:]
	h := udp[8:]
	if binary.BigEndian.Uint32(h[0:4]) != Magic || Type(h[5]) != TypeTrace {
		return
	}
	k := capKey{netip.AddrFrom4([4]byte(q[16:20])), binary.BigEndian.Uint16(udp[0:2]), uint64(h[7])}
	c.mu.Lock()
	c.traceICMP[k] = ts
	c.mu.Unlock()
}

// hopRTTErrors returns |hop RTT − capture RTT| for every router hop of a
// trace of (peer, port), sorted. It waits (up to 2 s) for the capture to
// read both packets of each hop; hops it never saw are left out.
func hopRTTErrors(c *capture, peer netip.Addr, port uint16, hops []graph.Hop) []time.Duration {
	deadline := time.Now().Add(2 * time.Second)
	for {
		var errs []time.Duration
		missing := false
		c.mu.Lock()
		for i, h := range hops {
			if !h.Addr.IsValid() || h.Addr == peer {
				continue // silent, or the peer's trace-ack (no ICMP)
			}
			k := capKey{peer, port, uint64(i + 1)}
			tx, ok1 := c.traceTx[k]
			rx, ok2 := c.traceICMP[k]
			if !ok1 || !ok2 {
				missing = true
				continue
			}
			d := h.RTT - time.Duration(rx-tx)
			errs = append(errs, max(d, -d))
		}
		c.mu.Unlock()
		if !missing || time.Now().After(deadline) {
			slices.Sort(errs)
			return errs
		}
		time.Sleep(time.Millisecond) // the capture polls its socket
	}
}

// rtt is the capture's RTT of one ping: (T4cap − T1cap) − (T3 − T2).
func (c *capture) rtt(r Result) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := capKey{r.Peer, r.SrcPort, r.Seq}
	t1, ok1 := c.tx[k]
	a, ok2 := c.rx[k]
	if !ok1 || !ok2 || t1 == 0 || a.t == 0 {
		return 0, false
	}
	return time.Duration(a.t - t1 - (a.t3 - a.t2)), true
}

// reflectMismatches compares every captured ack with what the userspace
// reflector makes of the captured ping (Reflect with the ack's t2, t3 and
// counters); kernel says whether the kernel flag bit is expected. It returns
// how many pairs were compared and a description of the first mismatch.
func reflectMismatches(c *capture, kernel bool) (n int, first string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, r := range c.raw {
		if r[0] == nil || r[1] == nil {
			continue
		}
		n++
		var ping, ack Packet
		if Decode(r[0], &ping) != RejectNone || Decode(r[1], &ack) != RejectNone {
			return n, "undecodable"
		}
		Reflect(&ping, ack.T2, ack.T3, ack.RxCount, ack.AckCount)
		if kernel {
			ping.Flags |= FlagKernel
		}
		if want := AppendEncode(nil, &ping); string(want) != string(r[1]) && first == "" {
			first = fmt.Sprintf("%+v: ack\n% x\nwant\n% x", k, r[1], want)
		}
	}
	return n, first
}

// rttErrors returns |sample RTT − capture RTT| for every acked result the
// capture saw, sorted.
func rttErrors(c *capture, rs []Result) []time.Duration {
	var errs []time.Duration
	for _, r := range rs {
		if r.Lost {
			continue
		}
		if cr, ok := c.rtt(r); ok {
			d := r.RTT - cr
			if d < 0 {
				d = -d
			}
			errs = append(errs, d)
		}
	}
	slices.Sort(errs)
	return errs
}

func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	return v[min(len(v)-1, int(float64(len(v))*p))]
}

// Every sample's RTT agrees with the capture on the same interface.
func TestLabRTTMatchesCapture(t *testing.T) {
	// Limits hold on a loaded 2-core VM with -race. The capture is itself a
	// reference with jitter (the AF_PACKET tap runs a little before the
	// driver's tx stamp; softirqs can land in between), so the bound is on
	// the bulk (p50), plus a max for kernel stamps.
	for _, tc := range []struct {
		src      Source
		p50, max time.Duration
	}{
		{SourceKernel, 20 * time.Microsecond, 5 * time.Millisecond},
		// user stamps are clock reads in a goroutine: a preempted reader
		// (other load, GC) makes single samples arbitrarily wrong.
		{SourceUser, 2 * time.Millisecond, 0},
	} {
		t.Run(string(tc.src), func(t *testing.T) {
			lp := newLabPair(t, func(c *Config) { c.Timestamps = string(tc.src) })
			c := startCapture(t, lp.f, lp.h1)
			rs := lp.pingMany(t, 300, 2*time.Millisecond)
			if n, bad := reflectMismatches(c, false); n < 290 || bad != "" {
				t.Errorf("userspace reflector bytes (%d compared): %s", n, bad)
			}
			errs := rttErrors(c, rs)
			if len(errs) < 290 {
				t.Fatalf("capture matched %d of 300 pings", len(errs))
			}
			t.Logf("%s: |RTT − capture| p50 %v p90 %v p99 %v max %v (n=%d)", tc.src,
				pct(errs, .5), pct(errs, .9), pct(errs, .99), errs[len(errs)-1], len(errs))
			if pct(errs, .5) > tc.p50 || (tc.max > 0 && errs[len(errs)-1] > tc.max) {
				t.Errorf("RTT disagrees with the capture: p50 %v (limit %v), max %v (limit %v)",
					pct(errs, .5), tc.p50, errs[len(errs)-1], tc.max)
			}
		})
	}
}
