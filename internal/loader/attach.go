package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// clsactPriority is the tc filter priority dnms uses in clsact mode; an
// unusual value so that it does not collide with other people's filters.
const clsactPriority = 0x4d53 // "MS"

// attachment is one program attached to one hook of one interface.
type attachment struct {
	iface, hook, mode string
	ifindex           int
	detach            func() error
}

// attachIface attaches both programs to one interface, deciding the attach
// mode on the first one. The caller holds nlMu.
func (l *Loader) attachIface(name string, lnk netlink.Link) ([]attachment, error) {
	type hook struct {
		name string
		prog *ebpf.Program
		tcx  ebpf.AttachType
		tc   uint32
	}
	hooks := []hook{
		{"ingress", l.objs.DnmsIngress, ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS},
		{"egress", l.objs.DnmsEgress, ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS},
	}
	idx := lnk.Attrs().Index
	var done []attachment
	fail := func(err error) ([]attachment, error) {
		detachAll(done)
		return nil, err
	}
	for _, h := range hooks {
		if l.mode == ModeAuto || l.mode == ModeTCX {
			a, err := attachTCX(name, idx, h.name, h.prog, h.tcx)
			switch {
			case err == nil:
				l.mode = ModeTCX
				done = append(done, a)
				continue
			case l.mode == ModeAuto && errors.Is(err, ebpf.ErrNotSupported):
				// Decided once: this kernel has no tcx.
				l.cfg.Logger.Info("ebpf loader: tcx unsupported, falling back to clsact", "err", oneLine(err))
				l.mode = ModeClsact
			default:
				return fail(fmt.Errorf("ebpf unavailable: %v", oneLine(err)))
			}
		}
		a, err := attachClsact(l.nl, name, idx, h.name, h.prog, h.tc)
		if err != nil {
			return fail(fmt.Errorf("ebpf unavailable: %v", oneLine(err)))
		}
		l.mode = ModeClsact
		done = append(done, a)
	}
	return done, nil
}

func detachAll(as []attachment) []error {
	var errs []error
	for i := len(as) - 1; i >= 0; i-- {
		if err := as[i].detach(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func attachTCX(iface string, idx int, hook string, prog *ebpf.Program, at ebpf.AttachType) (attachment, error) {
	lk, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: at})
	if err != nil {
		return attachment{}, fmt.Errorf("attach tcx %s to %s: %w", hook, iface, err)
	}
	return attachment{iface: iface, hook: hook, mode: ModeTCX, ifindex: idx, detach: func() error {
		if err := lk.Close(); err != nil {
			return fmt.Errorf("detach tcx %s from %s: %w", hook, iface, err)
		}
		return nil
	}}, nil
}

// attachClsact makes sure the interface has a clsact qdisc and adds a
// direct-action BPF filter for prog. Detaching removes the filter and, if we
// created the qdisc and nothing else uses it, the qdisc.
func attachClsact(nl *netlink.Handle, iface string, idx int, hook string, prog *ebpf.Program, parent uint32) (attachment, error) {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: idx,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	created := true
	if err := nl.QdiscAdd(qdisc); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return attachment{}, fmt.Errorf("add clsact qdisc to %s: %w", iface, err)
		}
		created = false
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx,
			Parent:    parent,
			Handle:    netlink.MakeHandle(0, 1),
			Protocol:  unix.ETH_P_ALL,
			Priority:  clsactPriority,
		},
		Fd:           prog.FD(),
		Name:         "dnms_" + hook,
		DirectAction: true,
	}
	// Replace: a filter left by a dnms that crashed is ours to take over.
	if err := nl.FilterReplace(filter); err != nil {
		if created {
			_ = nl.QdiscDel(qdisc)
		}
		return attachment{}, fmt.Errorf("add clsact %s filter to %s: %w", hook, iface, err)
	}
	return attachment{iface: iface, hook: hook, mode: ModeClsact, ifindex: idx, detach: func() error {
		if err := nl.FilterDel(filter); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete clsact %s filter from %s: %w", hook, iface, err)
		}
		if !created {
			return nil
		}
		lnk, err := nl.LinkByIndex(idx)
		if err != nil {
			return nil // interface gone, and its qdisc with it
		}
		for _, p := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			if fs, err := nl.FilterList(lnk, p); err != nil || len(fs) > 0 {
				return nil // still in use (or unknown): leave it
			}
		}
		if err := nl.QdiscDel(qdisc); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("delete clsact qdisc from %s: %w", iface, err)
		}
		return nil
	}}, nil
}

// register exports dnms_ebpf_attached{iface,hook,mode} and the counters the
// programs keep.
func (l *Loader) register() error {
	if l.cfg.Registerer == nil {
		return nil
	}

	counter := func(name, help string, idx bpfDnmsStat) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(l.stat(idx)) })
	}
	cs := []prometheus.Collector{
		&attachedCollector{l: l},
		counter("dnms_ebpf_ringbuf_reserve_failures_total",
			"eBPF events lost because the ring buffer was full.", bpfDnmsStatDNMS_STAT_RESERVE_FAIL),
		counter("dnms_ebpf_reflected_total",
			"Pings and trace probes answered by the in-kernel reflector.", bpfDnmsStatDNMS_STAT_REFLECTED),
		counter("dnms_ebpf_reflect_errors_total",
			"In-kernel reflections that failed half way (packet dropped).", bpfDnmsStatDNMS_STAT_REFLECT_ERR),
		counter("dnms_ebpf_reflect_passed_total",
			"Pings the in-kernel reflector left to the userspace reflector (the FIB had no route for the ack).", bpfDnmsStatDNMS_STAT_REFLECT_PASS),
		&statsCollector{l: l},
		l.keyedMetrics(),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "dnms_ebpf_rx_arrival_stamps_total",
			Help: "RX stamps whose time is the stack's arrival stamp (before backlog queueing) rather than TC ingress.",
		}, func() float64 { return float64(l.skbStamps.Load()) }),
	}
	for i, c := range cs {
		if err := l.cfg.Registerer.Register(c); err != nil {
			for _, done := range cs[:i] {
				l.cfg.Registerer.Unregister(done)
			}
			return err
		}
	}
	l.reg = l.cfg.Registerer
	l.metrics = cs
	return nil
}

// statsCollector reads the per-kind stamp counters from the kernel on scrape.
type statsCollector struct {
	l *Loader
}

var stampDesc = prometheus.NewDesc("dnms_ebpf_stamps_total",
	"Kernel timestamps emitted by the eBPF programs, by kind (tx, rx_ack, rx_icmp, target_tx, target_rx).", []string{"kind"}, nil)

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- stampDesc }

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, k := range []struct {
		kind string
		idx  bpfDnmsStat
	}{
		{"tx", bpfDnmsStatDNMS_STAT_TX},
		{"rx_ack", bpfDnmsStatDNMS_STAT_RX_ACK},
		{"rx_icmp", bpfDnmsStatDNMS_STAT_RX_ICMP},
		{"target_tx", bpfDnmsStatDNMS_STAT_TARGET_TX},
		{"target_rx", bpfDnmsStatDNMS_STAT_TARGET_RX},
	} {
		ch <- prometheus.MustNewConstMetric(stampDesc, prometheus.CounterValue, float64(c.l.stat(k.idx)), k.kind)
	}
}

// attachedCollector exports dnms_ebpf_attached{iface,hook,mode}: the
// attachments of the moment (they follow link and route changes).
type attachedCollector struct{ l *Loader }

var attachedDesc = prometheus.NewDesc("dnms_ebpf_attached",
	"1 for every eBPF program dnms has attached, by interface, hook (ingress, egress) and mode (tcx, clsact).",
	[]string{"iface", "hook", "mode"}, nil)

func (c *attachedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- attachedDesc }

func (c *attachedCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.l.attachments() {
		ch <- prometheus.MustNewConstMetric(attachedDesc, prometheus.GaugeValue, 1, a.iface, a.hook, a.mode)
	}
}
