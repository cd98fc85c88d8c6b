package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport is memberlist's NetTransport (UDP packets, TCP streams on one
// address and port) with its garbage cut: NetTransport allocates a fresh
// 64 KiB buffer for every UDP packet it reads (most of a busy member's
// allocations, so of its GC), and resolves the destination's text address
// for every packet it sends. Here one reused buffer takes every read and
// memberlist gets an exact-size copy (it may keep the slice, queued for its
// handler, so the copy is never pooled); sends parse an ip:port without
// allocating. Streams are plain TCP, as in NetTransport.
type transport struct {
	log      *slog.Logger
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	tcp      *net.TCPListener
	udp      *net.UDPConn
	shutdown atomic.Bool
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

const (
	// maxPacket is the largest UDP payload read (NetTransport's buffer).
	maxPacket = 65536
	// udpRecvBuf is the socket receive buffer asked for (as NetTransport),
	// halved until the kernel accepts it.
	udpRecvBuf = 2 << 20
)

// newTransport listens on addr:port, TCP and UDP; port 0 takes a free port
// for both (retried: the UDP port may be taken when TCP's is free).
func newTransport(addr netip.Addr, port int, log *slog.Logger) (*transport, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var t *transport
		if t, err = listenTransport(addr, port, log); err == nil {
			return t, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, err
}

func listenTransport(addr netip.Addr, port int, log *slog.Logger) (*transport, error) {
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("listen TCP on %s: %w", net.JoinHostPort(addr.String(), strconv.Itoa(port)), err)
	}
	if port == 0 {
		port = tcp.Addr().(*net.TCPAddr).Port
	}
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("listen UDP on %s: %w", net.JoinHostPort(addr.String(), strconv.Itoa(port)), err)
	}
	for size := udpRecvBuf; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &transport{
		log:      log,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		tcp:      tcp,
		udp:      udp,
	}
	t.wg.Add(2)
	go t.acceptTCP()
	go t.readUDP()
	return t, nil
}

// port is the port bound.
func (t *transport) port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr is the address given (Config.AdvertiseAddr), or the
// bound one.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip == "" {
		a := t.tcp.Addr().(*net.TCPAddr)
		if a.IP.IsUnspecified() {
			return nil, 0, errors.New("no advertise address for an unspecified bind address")
		}
		return a.IP, a.Port, nil
	}
	a := net.ParseIP(ip)
	if a == nil {
		return nil, 0, fmt.Errorf("failed to parse advertise address %q", ip)
	}
	if a4 := a.To4(); a4 != nil {
		a = a4
	}
	return a, port, nil
}

// WriteTo sends one packet to addr (ip:port, or host:port resolved).
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		ua, rerr := net.ResolveUDPAddr("udp", addr)
		if rerr != nil {
			return time.Time{}, rerr
		}
		ap = ua.AddrPort()
	}
	_, err = t.udp.WriteToUDPAddrPort(b, ap)
	return time.Now(), err
}

// WriteToAddress is WriteTo: the node's name is not needed to send.
func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *transport) StreamCh() <-chan net.Conn           { return t.streamCh }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// Shutdown closes both sockets and waits for the readers to end.
func (t *transport) Shutdown() error {
	t.shutdown.Store(true)
	t.tcp.Close()
	t.udp.Close()
	t.wg.Wait()
	return nil
}

func (t *transport) acceptTCP() {
	defer t.wg.Done()
	var wait time.Duration
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			// A transient accept error (out of file descriptors): back
			// off as NetTransport does, 5 ms doubling to 1 s.
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			t.log.Error("gossip: accept TCP", "err", err, "retry_in", wait)
			time.Sleep(wait)
			continue
		}
		wait = 0
		t.streamCh <- conn
	}
}

func (t *transport) readUDP() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		ts := time.Now()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			t.log.Error("gossip: read UDP", "err", err)
			continue
		}
		if n < 1 {
			continue // memberlist needs the message type byte
		}
		msg := make([]byte, n)
		copy(msg, buf)
		t.packetCh <- &memberlist.Packet{
			Buf:       msg,
			From:      net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.Addr().Unmap(), from.Port())),
			Timestamp: ts,
		}
	}
}
