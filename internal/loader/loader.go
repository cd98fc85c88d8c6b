// Package loader loads dnms's eBPF programs (bpf/dnms.c, compiled by bpf2go
// into the embedded bpf_bpfel.o), attaches them to the probe interfaces with
// tcx or, where tcx is missing, with a clsact qdisc and netlink BPF filters,
// reads kernel timestamps from the ring buffer and hands them up as
// probe.Stamp values. It reports what the kernel allowed.
//
// It is the only package that imports cilium/ebpf. It knows nothing about
// graphs or scheduling.
package loader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dnms/dnms/internal/probe"
)

// Attach modes.
const (
	ModeAuto   = ""       // tcx if the kernel has it, else clsact
	ModeTCX    = "tcx"    // bpf_link based TC attachment (Linux ≥ 6.6)
	ModeClsact = "clsact" // clsact qdisc + direct-action BPF filters (netlink)
)

// DefaultPoll is the default ring buffer poll interval.
const DefaultPoll = 2 * time.Millisecond

// DefaultPingPort is the ping port of DESIGN.md.
const DefaultPingPort = 33435

// Config configures Load.
type Config struct {
	// Ifaces are the interfaces to attach to, by name, in the current
	// network namespace of the calling thread. Empty: every interface that
	// carries a default route, followed as links and routes change
	// (ifaces.go).
	Ifaces []string
	// PingPort is the UDP port dnms pings, acks and trace probes go to.
	PingPort uint16
	// Reflect turns on the in-kernel reflector: pings and trace probes to
	// one of our addresses are answered by TC ingress without waking
	// userspace.
	Reflect bool
	// ReflectEvents makes the reflector emit a probe.StampReflect stamp for
	// every reflected ping (off by default: it wakes the ring buffer reader).
	ReflectEvents bool
	// HMAC says our probes carry an HMAC. Only used to compute the TTL from
	// an ICMP error whose quote ends at the UDP header (RFC 792 routers).
	HMAC bool
	// Keyed: a probe key is set, so the reflector answers only members'
	// authenticated pings of confirmed epochs (keyed.go).
	Keyed bool
	// Mode forces an attach mode (ModeTCX or ModeClsact); ModeAuto decides
	// with a tcx attach attempt.
	Mode string
	// Registerer receives the dnms_ebpf_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// ArrivalStamps makes ack stamps the stack's arrival time (skb->tstamp,
	// taken when the packet was queued to the backlog, present whenever
	// some socket asked for receive timestamps: the probe engine's do)
	// instead of the TC ingress time, which lags it by the backlog's
	// queueing (tens of µs on a busy veth). The program reads CLOCK_MONOTONIC
	// and CLOCK_TAI next to it so the conversion is exact (arrivalTime).
	// DefaultConfig turns it on.
	ArrivalStamps bool
	// Poll is how often Run reads the ring buffer (0: DefaultPoll). The
	// programs never wake the reader (see bpf/dnms.c), so a stamp reaches
	// fn at most Poll after the packet.
	Poll time.Duration
	// Logger gets the one line saying which attach mode was chosen; nil
	// uses slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: ping port 33435, reflector on, arrival
// stamps on, auto attach mode. Ifaces must still be filled in.
func DefaultConfig() Config {
	return Config{PingPort: DefaultPingPort, Reflect: true, Poll: DefaultPoll, ArrivalStamps: true}
}

// Status is what the kernel allowed and what the programs counted.
type Status struct {
	Mode            string   `json:"mode"` // tcx or clsact
	Ifaces          []string `json:"ifaces"`
	Reflect         bool     `json:"reflect"`
	ReserveFailures uint64   `json:"reserve_failures"` // events lost to a full ring buffer
	Reflected       uint64   `json:"reflected"`        // pings answered in the kernel
	ReflectErrors   uint64   `json:"reflect_errors"`   // reflections that failed half way (dropped)
	ReflectPassed   uint64   `json:"reflect_passed"`   // pings left to the userspace reflector (no FIB result)
	TxStamps        uint64   `json:"tx_stamps"`
	RxAckStamps     uint64   `json:"rx_ack_stamps"`
	RxICMPStamps    uint64   `json:"rx_icmp_stamps"`
	// RxArrivalStamps counts RX stamps (ack, ICMP) whose time is the stack's
	// arrival stamp (skb->tstamp, taken before backlog queueing) rather
	// than the TC ingress time (Config.ArrivalStamps).
	RxArrivalStamps uint64 `json:"rx_arrival_stamps"`
	// TargetTxStamps and TargetRxStamps count stamps of external target
	// probes and their answers (targets.go).
	TargetTxStamps uint64 `json:"target_tx_stamps"`
	TargetRxStamps uint64 `json:"target_rx_stamps"`
	// Declined counts pings the keyed reflector left to userspace, by
	// reason (no_hmac, not_member, epoch); nil when not keyed.
	Declined map[string]uint64 `json:"declined,omitempty"`
}

// Loader holds the loaded programs, their attachments and the ring buffer.
type Loader struct {
	cfg  Config
	objs bpfObjects
	nlMu sync.Mutex      // guards nl against Close while Run refreshes addresses
	nl   *netlink.Handle // bound to the namespace Load ran in; nil once closed
	// linksChanged is signalled on link and route changes (watchLinks)
	// until stopWatch closes (Close).
	linksChanged chan struct{}
	stopWatch    chan struct{}
	mode         string
	attached     []attachment    // guarded by nlMu
	refused      map[string]bool // interfaces refused (logged once), guarded by nlMu
	// following: the first reconcile is done (nlMu)
	following bool
	rd        *ringbuf.Reader
	kick      chan struct{} // Kick: read the ring now
	metrics   []prometheus.Collector
	reg       prometheus.Registerer

	skbStamps atomic.Uint64 // RX stamps that used the stack's arrival time
	targetsOn bool          // targets_on set (nlMu; targets.go)

	mu      sync.Mutex // guards running
	running bool

	closeOnce sync.Once
	closeErr  error
}

// Supported says whether this process may load and attach dnms's programs
// here: a quick check for the time-source choice. The error is one line.
func Supported() error {
	// Kernels since 5.11 account BPF memory to the cgroup and ignore
	// RLIMIT_MEMLOCK; an unprivileged process cannot raise it, so its
	// failure only matters if loading fails too.
	_ = rlimit.RemoveMemlock()
	hint := "needs CAP_BPF, CAP_NET_ADMIN and Linux >= 5.8"
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		return fmt.Errorf("ebpf unavailable (%s): TC programs: %v", hint, oneLine(err))
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return fmt.Errorf("ebpf unavailable (%s): ring buffer: %v", hint, oneLine(err))
	}
	return nil
}

// Load loads the programs with cfg's settings and attaches them to every
// interface in cfg.Ifaces (ingress and egress). It must be called from the
// network namespace the interfaces live in. The error is one line, meant to
// be logged by a caller that then falls back to another time source.
func Load(cfg Config) (*Loader, error) {
	if cfg.PingPort == 0 {
		return nil, errors.New("ebpf loader: ping port is 0")
	}
	switch cfg.Mode {
	case ModeAuto, ModeTCX, ModeClsact:
	default:
		return nil, fmt.Errorf("ebpf loader: unknown attach mode %q", cfg.Mode)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if err := Supported(); err != nil {
		return nil, err
	}

	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("ebpf unavailable: %v", oneLine(err))
	}
	if err := setVariables(spec, cfg); err != nil {
		return nil, fmt.Errorf("ebpf unavailable: %v", oneLine(err))
	}

	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("ebpf loader: netlink: %v", err)
	}
	l := &Loader{cfg: cfg, nl: nl, mode: cfg.Mode, kick: make(chan struct{}, 1), refused: map[string]bool{},
		linksChanged: make(chan struct{}, 1), stopWatch: make(chan struct{})}
	if err := spec.LoadAndAssign(&l.objs, nil); err != nil {
		nl.Close()
		return nil, fmt.Errorf("ebpf unavailable: load programs: %v", oneLine(err))
	}
	if cfg.Reflect {
		enableLoForwarding(cfg.Logger)
	}
	// Addresses first: the reflector is live as soon as ingress attaches.
	if err := l.refreshAddrs(); err != nil {
		l.Close()
		return nil, fmt.Errorf("ebpf loader: %v", oneLine(err))
	}
	l.watchLinks() // before the first reconcile: no change is missed
	ifaces, err := l.reconcile()
	if err != nil {
		l.Close()
		return nil, err
	}
	if len(ifaces) == 0 {
		l.Close()
		if len(cfg.Ifaces) > 0 {
			return nil, fmt.Errorf("ebpf loader: none of the interfaces %s can take the programs", strings.Join(cfg.Ifaces, ","))
		}
		return nil, errors.New("ebpf loader: no interface carries a default route (set -ifaces)")
	}
	l.rd, err = ringbuf.NewReader(l.objs.Events)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("ebpf unavailable: open ring buffer: %v", oneLine(err))
	}
	if err := l.register(); err != nil {
		l.Close()
		return nil, fmt.Errorf("ebpf loader: register metrics: %v", oneLine(err))
	}
	cfg.Logger.Info("ebpf timestamps attached", "mode", l.mode, "ifaces", strings.Join(ifaces, ","),
		"reflector", cfg.Reflect, "ping_port", cfg.PingPort)
	return l, nil
}

func setVariables(spec *ebpf.CollectionSpec, cfg Config) error {
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	for name, v := range map[string]any{
		bpfVarPingPort:      cfg.PingPort,
		bpfVarReflect:       b(cfg.Reflect),
		bpfVarReflectEvents: b(cfg.ReflectEvents),
		bpfVarHmacDefault:   b(cfg.HMAC),
		bpfVarKeyed:         b(cfg.Keyed),
	} {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("variable %s missing from the eBPF object", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// refreshAddrs puts every address of this namespace into local_v4 and
// local_v6 and removes the ones that went away: the reflector answers only
// pings to us.
func (l *Loader) refreshAddrs() error {
	l.nlMu.Lock()
	defer l.nlMu.Unlock()
	if l.nl == nil {
		return nil // closed
	}
	addrs, err := l.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	ips := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ips = append(ips, ip)
		}
	}
	want4, want6 := addrSets(ips)
	if err := syncSet(l.objs.LocalV4, want4); err != nil {
		return fmt.Errorf("local_v4: %w", err)
	}
	if err := syncSet(l.objs.LocalV6, want6); err != nil {
		return fmt.Errorf("local_v6: %w", err)
	}
	return nil
}

// syncSet makes the keys of the hash map m (values uint8 1) equal want.
func syncSet[K comparable](m *ebpf.Map, want map[K]bool) error {
	var (
		k    K
		v    uint8
		have []K
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		have = append(have, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate: %w", err)
	}
	for _, a := range have {
		if !want[a] {
			if err := m.Delete(a); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete address: %w", err)
			}
		}
	}
	for a := range want {
		if err := m.Put(a, uint8(1)); err != nil {
			return fmt.Errorf("add address: %w", err)
		}
	}
	return nil
}

// Run reads the ring buffer and calls fn with every stamp until ctx is done.
// fn runs on Run's goroutine and must be quick. It also keeps the
// reflector's list of local addresses current.
//
// Nothing wakes the reader (the programs submit without wakeup, see
// bpf/dnms.c): Run drains the ring every Poll, and at once after Kick. It
// waits on a Go timer, never in a blocking epoll_wait, so that on a busy
// process with few Ps it is scheduled like any goroutine instead of queueing
// for a P after the syscall returns.
func (l *Loader) Run(ctx context.Context, fn func(probe.Stamp)) error {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return errors.New("ebpf loader: Run called twice")
	}
	l.running = true
	l.mu.Unlock()

	const addrEvery = 5 * time.Second
	nextAddrs := time.Now().Add(addrEvery)
	// A deadline long gone: ReadInto returns what is there and never blocks.
	l.rd.SetDeadline(time.Unix(1, 0))
	var rec ringbuf.Record
	t := time.NewTimer(l.cfg.Poll)
	defer t.Stop()
	for {
	drain:
		for {
			err := l.rd.ReadInto(&rec)
			switch {
			case err == nil:
			case errors.Is(err, os.ErrDeadlineExceeded):
				break drain // nothing more now
			case errors.Is(err, ringbuf.ErrClosed):
				return nil
			default:
				return fmt.Errorf("read ring buffer: %w", err)
			}
			s, fromSkb, ok := decode(rec.RawSample, l.cfg.ArrivalStamps)
			if !ok {
				continue
			}
			if fromSkb {
				l.skbStamps.Add(1)
			}
			fn(s)
		}
		if now := time.Now(); now.After(nextAddrs) {
			nextAddrs = now.Add(addrEvery)
			if err := l.refreshAddrs(); err != nil {
				l.cfg.Logger.Warn("ebpf loader: refresh local addresses", "err", err)
			}
			l.follow()
		}
		t.Reset(l.cfg.Poll)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-l.kick:
		case <-l.linksChanged:
			l.follow()
			if err := l.refreshAddrs(); err != nil {
				l.cfg.Logger.Warn("ebpf loader: refresh local addresses", "err", err)
			}
		}
	}
}

// follow moves the programs to the interfaces wanted now (reconcile).
func (l *Loader) follow() {
	if _, err := l.reconcile(); err != nil {
		l.cfg.Logger.Warn("ebpf loader: following interface changes", "err", oneLine(err))
	}
}

// Kick makes Run read the ring now rather than at its next poll: the probe
// engine calls it when acks arrive, whose stamps are already in the ring.
// It never blocks.
func (l *Loader) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// arrivalTime places real, a CLOCK_REALTIME arrival stamp, on
// CLOCK_MONOTONIC using mono and tai, the two clocks as the program read them
// back to back later. CLOCK_TAI − CLOCK_REALTIME is a whole number of seconds
// (the kernel's TAI offset, 0 or 37 s in practice) and both come from the
// same timekeeper reading, so tai − real is that offset plus the packet's age
// exactly; no userspace clock reading, and no clock step, enters the sum.
func arrivalTime(real, mono, tai uint64) (int64, bool) {
	if real == 0 || tai < real {
		return 0, false
	}
	lag := int64(tai - real)
	age := lag - (lag+int64(time.Second)/2)/int64(time.Second)*int64(time.Second)
	if age < 0 || age >= int64(maxBacklog) {
		return 0, false
	}
	return int64(mono) - age, true
}

// maxBacklog bounds how much earlier than the TC ingress stamp the stack's
// arrival stamp may be and still be believed (a clock step would otherwise
// move a stamp by seconds).
const maxBacklog = time.Millisecond

// decode turns one ring buffer record into a stamp. With arrival, an
// incoming packet's stamp is the stack's arrival time (skb->tstamp, taken
// before any backlog queueing) placed on CLOCK_MONOTONIC with the clock pair
// the program read next to it; fromSkb says that stamp was used.
func decode(raw []byte, arrival bool) (s probe.Stamp, fromSkb, ok bool) {
	var ev bpfDnmsEvent
	if len(raw) < int(unsafe.Sizeof(ev)) {
		return probe.Stamp{}, false, false
	}
	ev = *(*bpfDnmsEvent)(unsafe.Pointer(&raw[0]))
	var addr func(b [16]uint8) netip.Addr
	switch ev.Family {
	case 4:
		addr = func(b [16]uint8) netip.Addr { return netip.AddrFrom4([4]byte(b[:4])) }
	case 6:
		addr = func(b [16]uint8) netip.Addr { return netip.AddrFrom16(b) }
	default:
		return probe.Stamp{}, false, false
	}
	s = probe.Stamp{
		Kind:     probe.StampKind(ev.Kind),
		Local:    netip.AddrPortFrom(addr(ev.LocalAddr), ev.LocalPort),
		Remote:   addr(ev.RemoteAddr),
		ICMPType: ev.IcmpType,
		ICMPCode: ev.IcmpCode,
		Type:     ev.Type,
		Seq:      ev.Seq,
		Epoch:    ev.Epoch,
		TTL:      ev.Ttl,
		Time:     int64(ev.Ts),
	}
	if s.Kind == probe.StampRxICMP {
		s.Router = addr(ev.RouterAddr)
	}
	if arrival && ev.RxReal != 0 {
		if t, ok := arrivalTime(ev.RxReal, ev.RxMono, ev.RxTai); ok && t <= s.Time {
			s.Hook = s.Time
			s.Time, fromSkb = t, true
		}
	}
	return s, fromSkb, true
}

// monotonicNow is CLOCK_MONOTONIC in ns, the clock bpf_ktime_get_ns reads.
func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// stat sums one per-CPU counter.
func (l *Loader) stat(idx bpfDnmsStat) uint64 {
	var vals []uint64
	if err := l.objs.Stats.Lookup(uint32(idx), &vals); err != nil {
		return 0
	}
	var sum uint64
	for _, v := range vals {
		sum += v
	}
	return sum
}

// Status reports the attach mode, interfaces, reflector and counters.
func (l *Loader) Status() Status {
	return Status{
		Mode:            l.mode,
		Ifaces:          l.ifaceNames(),
		Reflect:         l.cfg.Reflect,
		ReserveFailures: l.stat(bpfDnmsStatDNMS_STAT_RESERVE_FAIL),
		Reflected:       l.stat(bpfDnmsStatDNMS_STAT_REFLECTED),
		ReflectErrors:   l.stat(bpfDnmsStatDNMS_STAT_REFLECT_ERR),
		ReflectPassed:   l.stat(bpfDnmsStatDNMS_STAT_REFLECT_PASS),
		TxStamps:        l.stat(bpfDnmsStatDNMS_STAT_TX),
		RxAckStamps:     l.stat(bpfDnmsStatDNMS_STAT_RX_ACK),
		RxICMPStamps:    l.stat(bpfDnmsStatDNMS_STAT_RX_ICMP),
		RxArrivalStamps: l.skbStamps.Load(),
		TargetTxStamps:  l.stat(bpfDnmsStatDNMS_STAT_TARGET_TX),
		TargetRxStamps:  l.stat(bpfDnmsStatDNMS_STAT_TARGET_RX),
		Declined:        l.declined(),
	}
}

// Close detaches every program, closes the ring buffer (ending Run) and
// unloads everything. It is safe to call more than once.
func (l *Loader) Close() error {
	l.closeOnce.Do(func() {
		l.nlMu.Lock()
		errs := detachAll(l.attached)
		l.attached = nil
		l.nlMu.Unlock()
		if l.rd != nil {
			if err := l.rd.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close ring buffer: %w", err))
			}
		}
		if l.reg != nil {
			for _, c := range l.metrics {
				l.reg.Unregister(c)
			}
		}
		// The handle goes before the maps, so that a concurrent Run's
		// address refresh sees nl == nil and leaves the maps alone.
		l.nlMu.Lock()
		if l.nl != nil {
			l.nl.Close()
			l.nl = nil
		}
		if err := l.objs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close eBPF objects: %w", err))
		}
		l.nlMu.Unlock()
		close(l.stopWatch)
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// oneLine keeps the first line of an error (verifier logs are long).
func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
