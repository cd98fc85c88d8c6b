package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Config configures an Engine. Build it from DefaultConfig.
type Config struct {
	// LocalAddr is the address every socket binds to and the source of
	// every probe (the host's dnms address).
	LocalAddr netip.Addr
	// PingPort receives pings, trace probes that reached us, acks and
	// trace-acks. SrcPortStart..SrcPortEnd are the flow source ports: one
	// socket each, sending pings, trace probes and mirrored acks. The range
	// must not contain PingPort.
	PingPort                 uint16
	SrcPortStart, SrcPortEnd uint16
	// Key is the cluster probe key; empty means no HMAC.
	Key []byte
	// ConfirmEpoch, when set with a Key, is told every (peer, source port,
	// epoch) the userspace reflector answered an authenticated probe of,
	// with its counters after it: the keyed in-kernel reflector restarts a
	// flow's counters only at a confirmed epoch, and continues from these
	// (loader.ConfirmEpoch), so the prober sees one counter sequence.
	ConfirmEpoch func(peer netip.Addr, sport uint16, epoch uint32, rx, ack uint64)
	// Timestamps is "auto", "ebpf", "kernel" or "user". auto picks ebpf when
	// EBPF is set, else kernel when SO_TIMESTAMPING works, else user.
	Timestamps string
	// EBPF says internal/loader is attached and will feed HandleStamp.
	EBPF bool
	// StampKick, if set, is called after each burst of datagrams on the
	// ping port: their eBPF stamps are already in the ring, and the loader
	// (loader.Kick) reads it at once instead of at its next poll.
	StampKick func()
	// Reflect turns the userspace reflector on. Turn it off when the
	// in-kernel reflector answers pings; pings userspace still sees are
	// counted in dnms_reflector_userspace_pings_total either way.
	Reflect bool
	// Timeout: a ping without ack after this long is lost.
	Timeout time.Duration
	// StampWait is how long an acked ping waits for missing stamps of the
	// chosen source before falling back to the next source.
	StampWait time.Duration
	// LossResolveWindow is how long after it timed out a lost ping (reported
	// at once, LossUnknown) may still get its direction from a later ack's
	// reflector counters (a Result with Sample.Resolves). A flow whose port
	// takes turns with k others is pinged every k intervals, so the window
	// must span several of those.
	LossResolveWindow time.Duration
	// ResultBuffer is the capacity of the Results channel. When it is full,
	// results are dropped and counted (dnms_probe_results_dropped_total).
	ResultBuffer int
	// TraceWindow is how many TTLs of one trace are in flight at once.
	TraceWindow int
	// TraceTimeout: a trace probe without answer after this long is a
	// silent hop.
	TraceTimeout time.Duration
	Registerer   prometheus.Registerer
	Logger       *slog.Logger
}

// DefaultConfig returns the defaults of DESIGN.md: ping port 33435, source
// ports 33436-33446, timestamps auto, userspace reflector on, 1 s timeout.
func DefaultConfig() Config {
	return Config{
		PingPort: 33435, SrcPortStart: 33436, SrcPortEnd: 33446,
		Timestamps: "auto", Reflect: true,
		Timeout: time.Second, StampWait: 50 * time.Millisecond, LossResolveWindow: 30 * time.Second,
		ResultBuffer: 4096, TraceWindow: 8, TraceTimeout: time.Second,
	}
}

// sock is one bound UDP socket.
type sock struct {
	port uint16
	conn *net.UDPConn
	rc   syscall.RawConn
	wmu  sync.Mutex // guards wmsg, wbuf, wb, codec (sends)
	wmsg *msg
	wbuf []byte
	woob [64]byte
	enc  *Codec
	wb   *sendBatch // PingBatch's buffers, made on first use
}

func (s *sock) fd(fn func(fd uintptr)) error {
	return s.rc.Write(func(fd uintptr) bool { fn(fd); return true })
}

// Engine owns the probe sockets: it sends pings and trace probes, reflects
// other hosts' pings, matches acks, joins timestamps and reports Results.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	source Source
	epoch  uint32
	kstamp bool // SO_TIMESTAMPING active on every socket
	// txStamp: pings ask for a software transmit stamp (the kernel source
	// only). With ebpf the TC program stamps the ping; a per-ping error
	// queue read for a fallback T1 would double the syscalls per ping, so
	// a ping whose eBPF stamp is missing falls back to user stamps.
	txStamp bool

	ping *sock
	src  []*sock // index port - SrcPortStart

	clk   realToMono
	m     *matcher
	res   chan Result
	refl  reflector
	trace traceTable

	met       metrics
	closeOnce sync.Once
	closed    chan struct{}
	// startMu orders Run's start against Close: the readers are added to
	// wg before Close waits on it, or Run sees the engine closed.
	startMu sync.Mutex
	wg      sync.WaitGroup
	running atomic.Bool
}

// New validates cfg, opens every socket and chooses the time source. The
// sockets receive nothing until Run.
func New(cfg Config) (*Engine, error) {
	if !cfg.LocalAddr.IsValid() {
		return nil, errors.New("probe: LocalAddr not set")
	}
	if cfg.PingPort == 0 || cfg.SrcPortStart == 0 || cfg.SrcPortEnd < cfg.SrcPortStart {
		return nil, fmt.Errorf("probe: ports out of range: ping %d, source %d-%d (must be 1..65535, start ≤ end)",
			cfg.PingPort, cfg.SrcPortStart, cfg.SrcPortEnd)
	}
	if cfg.PingPort >= cfg.SrcPortStart && cfg.PingPort <= cfg.SrcPortEnd {
		return nil, fmt.Errorf("probe: ping port %d overlaps the source port range %d-%d",
			cfg.PingPort, cfg.SrcPortStart, cfg.SrcPortEnd)
	}
	d := DefaultConfig()
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.StampWait <= 0 {
		cfg.StampWait = d.StampWait
	}
	if cfg.LossResolveWindow <= 0 {
		cfg.LossResolveWindow = d.LossResolveWindow
	}
	if cfg.ResultBuffer <= 0 {
		cfg.ResultBuffer = d.ResultBuffer
	}
	if cfg.TraceWindow <= 0 {
		cfg.TraceWindow = d.TraceWindow
	}
	if cfg.TraceTimeout <= 0 {
		cfg.TraceTimeout = d.TraceTimeout
	}
	if cfg.Timestamps == "" {
		cfg.Timestamps = "auto"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var want Source
	switch cfg.Timestamps {
	case "auto":
	case "ebpf", "kernel", "user":
		want = Source(cfg.Timestamps)
	default:
		return nil, fmt.Errorf("probe: Timestamps must be auto, ebpf, kernel or user, got %q", cfg.Timestamps)
	}
	if want == SourceEBPF && !cfg.EBPF {
		return nil, errors.New("probe: Timestamps=ebpf but no eBPF loader is attached (Config.EBPF)")
	}

	e := &Engine{cfg: cfg, log: cfg.Logger, closed: make(chan struct{})}
	var eb [4]byte
	rand.Read(eb[:])
	e.epoch = binary.BigEndian.Uint32(eb[:]) | 1
	e.clk.refresh()
	e.refl.flows = make(map[FlowKey]*reflFlow)
	e.trace.flows = make(map[FlowKey]*traceRun)

	stamps := want != SourceUser
	open := func(port uint16) (*sock, error) {
		c, ok, err := listenUDP(netip.AddrPortFrom(cfg.LocalAddr, port), stamps)
		if err != nil {
			return nil, fmt.Errorf("probe: bind %s: %w", netip.AddrPortFrom(cfg.LocalAddr, port), err)
		}
		rc, err := c.SyscallConn()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("probe: %w", err)
		}
		if stamps && !ok {
			stamps = false // kernel refused: no kernel stamps on any socket
		}
		return &sock{port: port, conn: c, rc: rc, wmsg: newMsg(0, 0), wbuf: make([]byte, 0, MaxLen), enc: NewCodec(cfg.Key)}, nil
	}
	var err error
	if e.ping, err = open(cfg.PingPort); err != nil {
		return nil, err
	}
	for p := int(cfg.SrcPortStart); p <= int(cfg.SrcPortEnd); p++ {
		s, err := open(uint16(p))
		if err != nil {
			e.closeSockets()
			return nil, err
		}
		e.src = append(e.src, s)
	}
	e.kstamp = stamps

	switch {
	case want == SourceEBPF || (want == "" && cfg.EBPF):
		e.source = SourceEBPF
	case want == SourceKernel && !e.kstamp:
		e.closeSockets()
		return nil, errors.New("probe: Timestamps=kernel but the kernel refused SO_TIMESTAMPING")
	case want == SourceKernel || (want == "" && e.kstamp):
		e.source = SourceKernel
	default:
		e.source = SourceUser
	}
	e.txStamp = e.kstamp && e.source == SourceKernel
	if want == "" {
		e.log.Info("timestamp source chosen", "source", e.source, "ebpf", cfg.EBPF, "soTimestamping", e.kstamp)
	}
	e.m = newMatcher(cfg.Timeout, cfg.StampWait, cfg.LossResolveWindow, e.source, e.deliver)
	e.res = make(chan Result, cfg.ResultBuffer)
	e.met = newMetrics(e)
	if cfg.Registerer != nil {
		if err := e.met.register(cfg.Registerer); err != nil {
			e.closeSockets()
			return nil, fmt.Errorf("probe: metrics: %w", err)
		}
	}
	e.met.source.WithLabelValues(string(e.source)).Set(1)
	return e, nil
}

// Source is the time source chosen at start.
func (e *Engine) Source() Source { return e.source }

// Epoch is this engine's random epoch (reflectors reset counters on change).
func (e *Engine) Epoch() uint32 { return e.epoch }

// LocalAddr is the address the engine's sockets are bound to.
func (e *Engine) LocalAddr() netip.Addr { return e.cfg.LocalAddr }

// Results delivers one Result per ping: acked, or lost with its direction.
func (e *Engine) Results() <-chan Result { return e.res }

func (e *Engine) deliver(r Result) {
	select {
	case e.res <- r:
	default:
		e.met.resultsDropped.Inc()
	}
}

// Run reads every socket and runs the timers until ctx is done or Close is
// called. It returns ctx.Err() or nil after Close.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("probe: Run called twice")
	}
	e.startMu.Lock()
	select {
	case <-e.closed:
		e.startMu.Unlock()
		return nil
	default:
	}
	e.wg.Add(1 + len(e.src))
	// The ping port sends nothing, so its error queue stays empty: skip
	// that syscall on every datagram.
	go func() { defer e.wg.Done(); e.readLoop(e.ping, false, e.handlePingPort) }()
	for _, s := range e.src {
		go func() { defer e.wg.Done(); e.readLoop(s, true, e.handleSrcPort) }()
	}
	e.startMu.Unlock()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var n int
	for {
		select {
		case <-ctx.Done():
			e.Close()
			return ctx.Err()
		case <-e.closed:
			return nil
		case <-tick.C:
			now := nanotime()
			e.m.expire(now)
			if n++; n%20 == 0 {
				e.clk.refresh()
			}
		}
	}
}

// Close closes every socket, waits for the readers and reports what is still
// outstanding as lost. Safe to call more than once.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.startMu.Lock()
		close(e.closed)
		e.startMu.Unlock()
		e.closeSockets()
		e.wg.Wait()
		e.m.flush()
	})
	return nil
}

func (e *Engine) closeSockets() {
	if e.ping != nil {
		e.ping.conn.Close()
	}
	for _, s := range e.src {
		s.conn.Close()
	}
}

func (e *Engine) srcSock(port uint16) *sock {
	if port < e.cfg.SrcPortStart || port > e.cfg.SrcPortEnd {
		return nil
	}
	return e.src[port-e.cfg.SrcPortStart]
}

// ErrClosed is returned by Ping and Trace after Close.
var ErrClosed = errors.New("probe: engine closed")

// Ping sends one ping on flow (peer, srcPort) and returns its sequence
// number. Its outcome arrives on Results (acked, or lost after Timeout). A
// send error is also reported as a lost (forward) result.
func (e *Engine) Ping(peer netip.Addr, srcPort uint16) (uint64, error) {
	s := e.srcSock(srcPort)
	if s == nil {
		return 0, fmt.Errorf("probe: source port %d outside %d-%d", srcPort, e.cfg.SrcPortStart, e.cfg.SrcPortEnd)
	}
	select {
	case <-e.closed:
		return 0, ErrClosed
	default:
	}
	return e.sendPings(s, []FlowKey{{Peer: peer, SrcPort: srcPort}})
}

// HandleStamp joins one eBPF stamp from internal/loader with its probe. Safe
// for concurrent use.
func (e *Engine) HandleStamp(s Stamp) {
	k := FlowKey{Peer: s.Remote, SrcPort: s.Local.Port()}
	now := nanotime()
	switch s.Kind {
	case StampTx:
		if Type(s.Type) == TypePing && e.m.stamp(k, s.Seq, true, idxEBPF, s.Time, 0, now) {
			return
		}
		if Type(s.Type) == TypeTrace {
			if s.Epoch == e.epoch {
				e.trace.stampTx(k, s.Seq, s.Time)
			}
			return // a trace that already ended needs no stamp
		}
	case StampRxAck:
		if Type(s.Type) == TypeAck && e.m.stamp(k, s.Seq, false, idxEBPF, s.Time, s.Hook, now) {
			return
		}
		if Type(s.Type) == TypeTraceAck {
			if s.Epoch == e.epoch {
				e.trace.stampAck(k, s.Seq, s.Time, s.Hook)
			}
			return
		}
	case StampRxICMP:
		// The same error also reaches the socket's error queue; whichever
		// comes first answers the hop, and the kernel's stamps give its RTT.
		// A quote too short for the sequence number leaves it to the socket.
		if s.Seq != 0 && s.Epoch == e.epoch && Type(s.Type) == TypeTrace {
			reached, unreachable := classifyICMP(s.Remote.Is4(), s.ICMPType, s.ICMPCode, s.Router, k.Peer)
			e.trace.replyStamp(k, s.Seq, s.Router, reached, unreachable, s.Time, s.Hook)
		}
		return
	case StampReflect:
		e.met.kernelReflected.Inc()
		return
	}
	e.met.stampsUnmatched.Inc()
}

// readBatch is how many datagrams one recvmmsg may bring.
const readBatch = 32

// readLoop drains one socket (error queue first, then data, up to readBatch
// datagrams per syscall) until it is closed. It blocks in the runtime poller
// between bursts; EPOLLERR (error queue) also wakes it.
func (e *Engine) readLoop(s *sock, errQueue bool, handle func(s *sock, m *msg, errq bool, ci *cmsgInfo, t4 int64)) {
	dec := NewCodec(e.cfg.Key) // one codec per reader goroutine: HMAC state is never shared
	b := newBatch(readBatch, 2048, 512, dec)
	var eb *batch // error queue: tx stamps, ICMP errors
	if errQueue {
		eb = newBatch(readBatch, 2048, 512, dec)
	}
	var kick func()
	if s == e.ping && e.source == SourceEBPF {
		kick = e.cfg.StampKick
	}
	// deliver hands the first n msgs of bb to handle with one user stamp:
	// all of them had arrived by now.
	deliver := func(bb *batch, n int, errq bool) {
		t := nanotime()
		for i := range n {
			m := &bb.msgs[i]
			ci := parseCmsgs(m.oob[:m.oobn])
			handle(s, m, errq, &ci, t)
		}
	}
	var fatal error
	for {
		err := s.rc.Read(func(fd uintptr) bool {
			for {
				for eb != nil {
					n, err := eb.recv(fd, unix.MSG_ERRQUEUE)
					if err != nil || n == 0 {
						break
					}
					deliver(eb, n, true)
					if n < readBatch {
						break
					}
				}
				n, err := b.recv(fd, 0)
				if err == unix.EAGAIN || err == unix.EWOULDBLOCK {
					return false
				}
				if err != nil {
					switch err {
					case unix.EINTR, unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH:
						continue // a pending ICMP error reported as the read's error
					case unix.EBADF:
						fatal = err
						return true
					}
					// Anything else: count it, keep the socket, wait for
					// the next datagram. A probe socket never gives up.
					e.met.readErrors.Inc()
					return false
				}
				deliver(b, n, false)
				if kick != nil {
					kick()
				}
				if n < readBatch {
					return false // drained: wait in the poller
				}
			}
		})
		select {
		case <-e.closed:
			return
		default:
		}
		if err != nil || fatal != nil {
			e.log.Error("probe socket read failed", "port", s.port, "err", errors.Join(err, fatal))
			return
		}
	}
}

// handlePingPort handles one datagram to the ping port.
func (e *Engine) handlePingPort(s *sock, m *msg, errq bool, ci *cmsgInfo, tUser int64) {
	if errq {
		if ci.hasErr && ci.ee.Origin == unix.SO_EE_ORIGIN_TIMESTAMPING {
			e.handleTxStamp(m, ci) // acks this host reflected: ignored
		}
		return
	}
	from := m.from()
	var p Packet
	if r := m.dec.Decode(m.buf[:m.n], &p); r != RejectNone {
		e.met.reject(r)
		return
	}
	tKern := int64(0)
	if ci.stamp != 0 {
		tKern = e.clk.mono(ci.stamp)
	}
	switch p.Type {
	case TypePing, TypeTrace:
		e.met.userspacePings.Inc()
		if e.cfg.Reflect {
			t2 := tUser
			if e.kstamp && tKern != 0 {
				t2 = tKern
			}
			e.reflect(from, &p, t2)
		}
	case TypeAck:
		var t4 [numSources]int64
		t4[idxUser] = tUser
		t4[idxKernel] = tKern
		k := FlowKey{Peer: from.Addr().Unmap(), SrcPort: from.Port()}
		if p.Epoch != e.epoch {
			e.met.reject(RejectUnknownFlow)
			return
		}
		if r := e.m.ack(k, &p, t4, tUser); r != RejectNone {
			e.met.reject(r)
			return
		}
		e.met.acksReceived.Inc()
	case TypeTraceAck:
		if p.Epoch != e.epoch {
			e.met.reject(RejectUnknownFlow)
			return
		}
		k := FlowKey{Peer: from.Addr().Unmap(), SrcPort: from.Port()}
		if r := e.trace.reply(k, p.Seq, from.Addr().Unmap(), true, tUser); r != RejectNone {
			e.met.reject(r)
		}
	}
}

// handleSrcPort handles the error queue of a source-port socket (tx stamps,
// ICMP errors quoting our probes) and drops stray datagrams.
func (e *Engine) handleSrcPort(s *sock, m *msg, errq bool, ci *cmsgInfo, tUser int64) {
	if !errq {
		e.met.strayPackets.Inc()
		return
	}
	if !ci.hasErr {
		return
	}
	switch ci.ee.Origin {
	case unix.SO_EE_ORIGIN_TIMESTAMPING:
		e.handleTxStamp(m, ci)
	case unix.SO_EE_ORIGIN_ICMP, unix.SO_EE_ORIGIN_ICMP6:
		e.handleICMP(s, m, ci, tUser)
	}
}

// handleTxStamp joins a kernel transmit stamp with the ping it belongs to.
func (e *Engine) handleTxStamp(m *msg, ci *cmsgInfo) {
	if ci.stamp == 0 {
		return
	}
	dst, payload, ok := txPacket(m.buf[:m.n])
	if !ok {
		return
	}
	var p Packet
	if Decode(payload, &p) != RejectNone || p.Type != TypePing || p.Epoch != e.epoch {
		return
	}
	k := FlowKey{Peer: dst.Unmap(), SrcPort: p.SrcPort}
	e.m.stamp(k, p.Seq, true, idxKernel, e.clk.mono(ci.stamp), 0, nanotime())
}

// handleICMP matches an ICMP error that quotes one of our trace probes. The
// error queue gives the quoted UDP payload (our dnms header, as far as the
// router quoted it) and the original destination as the message name.
func (e *Engine) handleICMP(s *sock, m *msg, ci *cmsgInfo, tUser int64) {
	dst := m.from()
	q := m.buf[:m.n]
	if len(q) < 24 || binary.BigEndian.Uint32(q[0:4]) != Magic || Type(q[5]) != TypeTrace {
		e.met.icmpUnmatched.Inc()
		return
	}
	if binary.BigEndian.Uint32(q[12:16]) != e.epoch {
		e.met.icmpUnmatched.Inc()
		return
	}
	seq := binary.BigEndian.Uint64(q[16:24])
	k := FlowKey{Peer: dst.Addr().Unmap(), SrcPort: s.port}
	router := ci.offender.Unmap()
	reached, unreachable := classifyICMP(ci.ee.Origin == unix.SO_EE_ORIGIN_ICMP, ci.ee.Type, ci.ee.Code, router, k.Peer)
	if e.trace.replyICMP(k, seq, router, reached, unreachable, tUser) != RejectNone {
		e.met.icmpUnmatched.Inc()
	}
}

// classifyICMP says what an ICMP (v4) or ICMPv6 error from router about a
// probe to peer means for a trace: reached, the peer said port unreachable;
// unreachable, the path ends at router. Time exceeded is neither.
func classifyICMP(v4 bool, typ, code uint8, router, peer netip.Addr) (reached, unreachable bool) {
	switch {
	case v4 && typ == 11, !v4 && typ == 3: // time exceeded
	case v4 && typ == 3 && code == 3, !v4 && typ == 1 && code == 4: // port unreachable
		return router == peer, true
	case v4 && typ == 3, !v4 && typ == 1: // host/net unreachable
		return false, true
	}
	return false, false
}
