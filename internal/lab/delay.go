package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The delay element delays one direction of one link (traffic leaving
// node "near" towards node "far") in userspace, without netem:
//
//   - modeIngress (the receiver is a router): an AF_PACKET socket taps
//     frames arriving on far's interface; an nftables netdev/ingress rule
//     on that interface drops the originals (IP only, source MAC not
//     delayMAC). After the delay the element re-sends each frame from
//     near's interface with source MAC delayMAC, through a
//     PACKET_QDISC_BYPASS socket, so the near side's qdisc, TC hooks and
//     captures do not see it twice and far receives it on the real
//     interface.
//   - modeEgress (the receiver is a host, whose own TC ingress hooks must
//     see each frame once, at its delayed time): an nftables netdev/egress
//     rule on near's interface diverts (fwd) IP frames to a private veth
//     pair, whose far end the element reads. It re-sends them on near's
//     interface with skb mark delayMark (the rule skips marked frames; the
//     mark is scrubbed when the frame crosses into far's namespace).
//
// Either way UDP and TCP checksums are recomputed before sending, and ARP
// is never delayed. Frames keep their order. Precision is measured by
// BenchmarkDelayElement and documented in the package README notes.
type delayMode int

const (
	modeIngress delayMode = iota + 1
	modeEgress
)

const (
	delayMAC  = "02:dd:1a:b0:00:01"
	delayMark = 0x64646c79 // "ddly"
	// maxQueued frames wait in one element; more are dropped (counted).
	maxQueued = 1 << 16
)

var delayMACBytes = [6]byte{0x02, 0xdd, 0x1a, 0xb0, 0x00, 0x01}

type frame struct {
	due time.Time
	b   []byte
}

type delayElement struct {
	mode    delayMode
	capNS   string // namespace of the capture socket
	capIf   string // egress mode: the veth the nft rule diverts to
	d       atomic.Int64
	rx      *os.File
	txfd    int
	txIndex int
	q       chan frame
	wg      sync.WaitGroup
	once    sync.Once

	sent, overflow, sendErr atomic.Uint64

	mu   sync.Mutex
	late []time.Duration // lateness of recent sends (ring)
	next int
}

func captureFilter() ([]unix.SockFilter, error) {
	const (
		accept = 9
		drop   = 10
	)
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: drop - 2},
		/* 2 */ bpf.LoadAbsolute{Off: 12, Size: 2},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipTrue: 1},
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IPV6, SkipFalse: drop - 5},
		/* 5 */ bpf.LoadAbsolute{Off: 6, Size: 4},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(delayMACBytes[:4]), SkipTrue: accept - 7},
		/* 7 */ bpf.LoadAbsolute{Off: 10, Size: 2},
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(binary.BigEndian.Uint16(delayMACBytes[4:])), SkipTrue: drop - 9},
		/* 9 */ bpf.RetConstant{Val: 0x40000},
		/* 10 */ bpf.RetConstant{Val: 0},
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, err
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openCapture opens, in the current namespace, a non-blocking AF_PACKET
// socket that receives incoming IP frames on ifname (not delayMAC's).
func openCapture(ifname string) (*os.File, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", ifname, err)
	}
	filter, err := captureFilter()
	if err != nil {
		return nil, fmt.Errorf("capture filter: %w", err)
	}
	// Protocol 0 receives nothing until bind, so the filter is in place
	// before the first frame.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("capture socket: %w", err)
	}
	fail := func(what string, err error) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("capture on %s: %s: %w", ifname, what, err)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return fail("attach filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	return os.NewFile(uintptr(fd), "capture-"+ifname), nil
}

// openSender opens, in the current namespace, an AF_PACKET socket that
// sends frames on ifname past the qdisc layer, with the delay mark.
func openSender(ifname string) (fd, ifindex int, err error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, 0, fmt.Errorf("sender on %s: %w", ifname, err)
	}
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("sender socket: %w", err)
	}
	for _, o := range []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS"},
		{unix.SOL_SOCKET, unix.SO_MARK, delayMark, "SO_MARK"},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return -1, 0, fmt.Errorf("sender on %s: %s: %w", ifname, o.name, err)
		}
	}
	return fd, ifi.Index, nil
}

// newDelayElement starts the sockets and goroutines; the caller installs
// the nft rules afterwards (so no frame is dropped before it is tapped)
// and removes them before close.
func (f *Fabric) newDelayElement(df *dirFault, d time.Duration) (*delayElement, error) {
	de := &delayElement{q: make(chan frame, maxQueued), txfd: -1, late: make([]time.Duration, 0, 4096)}
	de.d.Store(int64(d))
	var farIsHost bool
	for _, h := range f.Hosts {
		if h.Name == df.far.Node {
			farIsHost = true
		}
	}
	if farIsHost {
		de.mode = modeEgress
		de.capNS = df.near.NS
		de.capIf = "dly" + df.near.Ifname
		if len(de.capIf)+1 > unix.IFNAMSIZ-1 {
			return nil, fmt.Errorf("delay: interface name %sp too long", de.capIf)
		}
		if err := makeCapturePair(df.near.NS, de.capIf); err != nil {
			return nil, err
		}
	} else {
		de.mode = modeIngress
		de.capNS = df.far.NS
	}
	var err error
	capIf := df.far.Ifname
	if de.mode == modeEgress {
		capIf = de.capIf + "p"
	}
	err = doNS(de.capNS, func() error {
		de.rx, err = openCapture(capIf)
		return err
	})
	if err == nil {
		err = doNS(df.near.NS, func() error {
			de.txfd, de.txIndex, err = openSender(df.near.Ifname)
			return err
		})
	}
	if err != nil {
		de.closeSockets()
		de.removePair()
		return nil, fmt.Errorf("lab: delay on %s from %s: %w", df.link.ID, df.near.Node, err)
	}
	de.wg.Add(2)
	go de.readLoop()
	go de.sendLoop()
	return de, nil
}

func makeCapturePair(ns, name string) error {
	if err := ipBatch(ns, fmt.Sprintf("link add %s type veth peer name %sp\n", name, name)); err != nil {
		return fmt.Errorf("delay: capture veth: %w", err)
	}
	err := doNS(ns, func() error {
		for _, ifn := range []string{name, name + "p"} {
			// No IPv6 (no ND/MLD frames to forward by mistake), no offloads.
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifn+"/disable_ipv6", []byte("1"), 0o644); err != nil {
				return err
			}
			if err := disableOffloads(ifn); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = ipBatch(ns, fmt.Sprintf("link set dev %s up\nlink set dev %sp up\n", name, name))
	}
	if err != nil {
		_ = ipBatch(ns, fmt.Sprintf("link del %s\n", name))
		return fmt.Errorf("delay: capture veth: %w", err)
	}
	return nil
}

func (de *delayElement) readLoop() {
	defer de.wg.Done()
	defer close(de.q)
	runtime.LockOSThread()
	realtime()
	rc, err := de.rx.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 65536)
	oob := make([]byte, 128)
	for {
		var (
			n, oobn int
			rerr    error
		)
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil || rerr != nil {
			return // closed
		}
		// Count the delay from the kernel's receive stamp, so that this
		// goroutine's wake-up latency is not added to it.
		now := time.Now()
		due := now.Add(time.Duration(de.d.Load()))
		if ts, ok := rxStamp(oob[:oobn]); ok {
			if lag := now.Sub(ts); lag > 0 && lag < time.Second {
				due = due.Add(-lag)
			}
		}
		fr := frame{due: due, b: append([]byte(nil), buf[:n]...)}
		select {
		case de.q <- fr:
		default:
			de.overflow.Add(1)
		}
	}
}

// rxStamp returns the SO_TIMESTAMPNS receive time in a control message.
func rxStamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(ts.Sec, ts.Nsec), true
		}
	}
	return time.Time{}, false
}

// realtime moves the calling goroutine's OS thread to SCHED_FIFO, so that
// on a busy machine it runs as soon as its sleep ends instead of waiting a
// scheduler slice (tens of ms under load). Best effort: without
// CAP_SYS_NICE the element still works, less precisely. The caller must
// hold runtime.LockOSThread until it exits (the thread is then discarded).
func realtime() {
	_ = unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 10}, 0)
}

func (de *delayElement) sendLoop() {
	defer de.wg.Done()
	// Never unlocked: the real-time thread dies with this goroutine.
	runtime.LockOSThread()
	realtime()
	for fr := range de.q {
		if wait := time.Until(fr.due); wait > 0 {
			// A blocking nanosleep on this thread, not a runtime timer:
			// the kernel wakes the real-time thread itself.
			ts := unix.NsecToTimespec(int64(wait))
			for unix.Nanosleep(&ts, &ts) == unix.EINTR {
			}
		}
		b := fr.b
		if len(b) < 14 {
			continue
		}
		if de.mode == modeIngress {
			copy(b[6:12], delayMACBytes[:])
		}
		fixChecksums(b)
		proto := binary.BigEndian.Uint16(b[12:14])
		late := time.Since(fr.due)
		err := unix.Sendto(de.txfd, b, 0, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: de.txIndex})
		if err != nil {
			de.sendErr.Add(1)
			continue
		}
		de.sent.Add(1)
		de.mu.Lock()
		if len(de.late) < cap(de.late) {
			de.late = append(de.late, late)
		} else {
			de.late[de.next] = late
			de.next = (de.next + 1) % len(de.late)
		}
		de.mu.Unlock()
	}
}

// DelayStats describes one delay element: frames sent, frames dropped
// because too many were waiting (Overflow), failed sends, and how late
// frames left relative to their due time (the tap's kernel receive stamp
// plus the delay), over the last 4096 frames.
type DelayStats struct {
	Sent, Overflow, SendErrors uint64
	LateP50, LateP99, LateMax  time.Duration
}

func (de *delayElement) stats() DelayStats {
	s := DelayStats{Sent: de.sent.Load(), Overflow: de.overflow.Load(), SendErrors: de.sendErr.Load()}
	de.mu.Lock()
	l := append([]time.Duration(nil), de.late...)
	de.mu.Unlock()
	if len(l) > 0 {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		s.LateP50 = l[len(l)/2]
		s.LateP99 = l[len(l)*99/100]
		s.LateMax = l[len(l)-1]
	}
	return s
}

func (de *delayElement) closeSockets() {
	if de.rx != nil {
		de.rx.Close()
	}
	if de.txfd >= 0 {
		unix.Close(de.txfd)
		de.txfd = -1
	}
}

func (de *delayElement) removePair() {
	if de.mode == modeEgress && de.capIf != "" {
		_ = ipBatch(de.capNS, fmt.Sprintf("link del %s\n", de.capIf))
	}
}

// close stops capturing, sends what is queued at its due time, then
// releases everything. The nft rules must already be gone.
func (de *delayElement) close() {
	de.once.Do(func() {
		de.rx.Close()
		de.wg.Wait()
		unix.Close(de.txfd)
		de.txfd = -1
		de.removePair()
	})
}

// fixChecksums recomputes the UDP or TCP checksum of an Ethernet frame
// carrying IPv4 or IPv6 (no extension headers), leaving anything else,
// including fragments, as it is.
func fixChecksums(b []byte) {
	et := binary.BigEndian.Uint16(b[12:14])
	p := b[14:]
	var (
		proto  byte
		l4     []byte
		pseudo uint32
	)
	switch et {
	case unix.ETH_P_IP:
		if len(p) < 20 || p[0]>>4 != 4 {
			return
		}
		ihl := int(p[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(p[2:4]))
		if ihl < 20 || total < ihl || total > len(p) {
			return
		}
		if binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 { // MF or offset: fragment
			return
		}
		proto = p[9]
		l4 = p[ihl:total]
		pseudo = sum16(p[12:20]) + uint32(proto) + uint32(len(l4))
	case unix.ETH_P_IPV6:
		if len(p) < 40 {
			return
		}
		plen := int(binary.BigEndian.Uint16(p[4:6]))
		if 40+plen > len(p) {
			return
		}
		proto = p[6]
		l4 = p[40 : 40+plen]
		pseudo = sum16(p[8:40]) + uint32(proto) + uint32(len(l4))
	default:
		return
	}
	var off int
	switch proto {
	case unix.IPPROTO_UDP:
		off = 6
		if len(l4) < 8 {
			return
		}
	case unix.IPPROTO_TCP:
		off = 16
		if len(l4) < 20 {
			return
		}
	default:
		return
	}
	l4[off], l4[off+1] = 0, 0
	c := ^fold(pseudo + sum16(l4))
	if c == 0 && proto == unix.IPPROTO_UDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
}

func sum16(b []byte) uint32 {
	var s uint32
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// SetDelay delays by d the IP packets leaving node from on link l (see the
// delay element above). 0 removes the delay. Changing d on a delayed
// direction applies to frames captured from then on.
func (f *Fabric) SetDelay(l Link, from string, d time.Duration) error {
	if d < 0 || d > time.Minute {
		return fmt.Errorf("lab: delay %v: want 0..1m", d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("lab: set delay: fabric closed")
	}
	df, err := f.direction(l, from)
	if err != nil {
		return err
	}
	df.delay = d
	switch {
	case d == 0 && df.de == nil:
		return nil
	case d == 0:
		old := df.de
		df.de = nil
		err := f.applyRules(df)
		old.close()
		return err
	case df.de != nil:
		df.de.d.Store(int64(d))
		return nil
	}
	de, err := f.newDelayElement(df, d)
	if err != nil {
		return err
	}
	df.de = de
	if err := f.applyRules(df); err != nil {
		df.de = nil
		_ = f.applyRules(df)
		de.close()
		return err
	}
	return nil
}

// DelayStats reports the delay element of one direction of l (zero if it
// has none).
func (f *Fabric) DelayStats(l Link, from string) DelayStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	df := f.faults[dirKey{l.ID, from}]
	if df == nil || df.de == nil {
		return DelayStats{}
	}
	return df.de.stats()
}
