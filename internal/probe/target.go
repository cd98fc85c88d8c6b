package probe

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// TargetKind is how an external target (a host that runs no dnms) is
// probed. One kind per file: target_icmp.go, target_tcp.go, target_udp.go.
type TargetKind string

const (
	KindICMP TargetKind = "icmp" // echo request → echo reply
	KindTCP  TargetKind = "tcp"  // SYN → SYN-ACK or RST; the kernel resets the half-open connection
	KindUDP  TargetKind = "udp"  // datagram → any answer or ICMP port unreachable
)

// Valid says whether k is a probe kind this package implements.
func (k TargetKind) Valid() bool { return k == KindICMP || k == KindTCP || k == KindUDP }

// What answered a target probe (TargetResult.Reply).
const (
	ReplyEcho            = "echo-reply"
	ReplySynAck          = "syn-ack"
	ReplyRST             = "rst"
	ReplyPortUnreachable = "port-unreachable"
	ReplyAnswer          = "answer"
	ReplyUnreachable     = "unreachable" // host/net/admin unreachable: lost
	ReplyTimeout         = "timeout"
	ReplySendError       = "send-error"
)

// TargetResult is one probe to an external target. A lost probe has no RTT.
type TargetResult struct {
	Kind TargetKind
	Addr netip.Addr
	Port uint16
	// SrcPort is the flow's source port (tcp, udp) or echo identifier (icmp).
	SrcPort uint16
	Seq     uint64
	Sent    time.Time
	Lost    bool
	RTT     time.Duration
	Reply   string
	// Source says which clock both ends of RTT came from: ebpf when the
	// TC programs stamped the probe and its answer (TargetConfig.EBPF),
	// else kernel when the send and the answer both got
	// SO_TIMESTAMPING software stamps within StampWait, else user.
	Source Source
}

// TargetFlow is one flow (fixed 5-tuple, or ICMP identifier) to one target
// address. Probe sends one probe and waits for its answer or the timeout;
// a flow runs one probe at a time.
type TargetFlow interface {
	Probe(ctx context.Context, timeout time.Duration) TargetResult
	Close() error
}

// TargetConfig configures a TargetProber.
type TargetConfig struct {
	// LocalAddr, when valid, is the source of every probe to its address
	// family; else the kernel's route lookup picks it per target.
	LocalAddr netip.Addr
	// Timestamps is "auto", "ebpf", "kernel" or "user". With auto or ebpf
	// and EBPF set, flows take eBPF stamps, falling back to kernel
	// then user stamps probe by probe; kernel never uses EBPF.
	Timestamps string
	// EBPF, when set, stamps target probes in the TC programs (the agent's
	// *loader.Loader, whose ring buffer reader hands the stamps to
	// HandleStamp).
	EBPF TargetStamper
	// StampWait is how long an answered probe waits for its kernel
	// transmit stamp before it falls back to user stamps.
	StampWait time.Duration
	Logger    *slog.Logger
}

// DefaultTargetConfig: auto timestamps, 20 ms stamp wait.
func DefaultTargetConfig() TargetConfig {
	return TargetConfig{Timestamps: "auto", StampWait: 20 * time.Millisecond}
}

// TargetProber opens flows to external targets. The raw sockets of icmp and
// tcp probes are shared by all flows and opened on first use (they need
// CAP_NET_RAW); udp flows have a socket each.
type TargetProber struct {
	cfg    TargetConfig
	log    *slog.Logger
	kstamp bool
	clk    realToMono
	eb     *ebpfJoin // nil: no eBPF stamps

	mu     sync.Mutex
	closed bool
	icmp   *rawSock
	tcp    *rawSock
	icmp6  *rawSock
	tcp6   *rawSock
	nextID uint16
	stop   chan struct{}
}

// NewTargetProber validates cfg. It opens nothing yet.
func NewTargetProber(cfg TargetConfig) (*TargetProber, error) {
	d := DefaultTargetConfig()
	if cfg.StampWait <= 0 {
		cfg.StampWait = d.StampWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &TargetProber{cfg: cfg, log: cfg.Logger, stop: make(chan struct{})}
	switch cfg.Timestamps {
	case "", "auto", "ebpf":
		p.kstamp = true
		if cfg.EBPF != nil {
			p.eb = &ebpfJoin{st: cfg.EBPF, waits: make(map[ebpfKey]*ebpfWait), watched: make(map[[2]uint16]int)}
		}
	case "kernel":
		p.kstamp = true
	case "user":
	default:
		return nil, fmt.Errorf("probe: Timestamps must be auto, ebpf, kernel or user, got %q", cfg.Timestamps)
	}
	p.clk.refresh()
	go p.refreshClock()
	var b [2]byte
	rand.Read(b[:])
	p.nextID = uint16(b[0])<<8 | uint16(b[1])
	return p, nil
}

func (p *TargetProber) refreshClock() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.clk.refresh()
		}
	}
}

// Close closes the shared raw sockets. Flows must be closed by their owner.
func (p *TargetProber) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.stop)
	for _, r := range []*rawSock{p.icmp, p.tcp, p.icmp6, p.tcp6} {
		if r != nil {
			r.close()
		}
	}
	return nil
}

// Open opens flow number flow (0-based) of kind to dst. dst's port is
// ignored for icmp.
func (p *TargetProber) Open(kind TargetKind, dst netip.AddrPort, flow int) (TargetFlow, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	src, err := p.source(dst)
	if err != nil {
		return nil, err
	}
	switch kind {
	case KindUDP:
		return p.openUDP(src, dst)
	case KindICMP, KindTCP:
		return p.openRaw(kind, src, dst)
	}
	return nil, fmt.Errorf("probe: unknown target kind %q", kind)
}

// source is the address probes to dst leave from.
func (p *TargetProber) source(dst netip.AddrPort) (netip.Addr, error) {
	if a := p.cfg.LocalAddr; a.IsValid() && a.Is4() == dst.Addr().Is4() {
		return a, nil
	}
	// A connected UDP socket asks the kernel's route lookup; nothing is sent.
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst.Addr(), 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("probe: no route to %s: %w", dst.Addr(), err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// sample turns the stamps of one answered probe into its RTT and source:
// kernel when both kernel stamps are there, else user.
func sample(r *TargetResult, t1u, t4u, t1k, t4k int64) {
	r.Source = SourceUser
	rtt := t4u - t1u
	if t1k != 0 && t4k != 0 && t4k >= t1k {
		r.Source, rtt = SourceKernel, t4k-t1k
	}
	r.RTT = time.Duration(max(rtt, 0))
}
