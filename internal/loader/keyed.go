package loader

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
)

// The keyed reflector (bpf/dnms.c, keyed_admit): with Config.Keyed, the
// kernel answers a ping only when it carries the HMAC flag, comes from a
// member (SetMembers) and belongs to an epoch userspace confirmed from an
// authenticated ping (ConfirmEpoch). Everything else goes up to the
// userspace reflector.

// SetMembers makes the reflector's member set equal addrs (the cluster's
// members, this node included). Call it on every membership change.
func (l *Loader) SetMembers(addrs []netip.Addr) error {
	want4, want6 := addrSets(addrs)
	if err := syncSet(l.objs.MembersV4, want4); err != nil {
		return fmt.Errorf("members_v4: %w", err)
	}
	if err := syncSet(l.objs.MembersV6, want6); err != nil {
		return fmt.Errorf("members_v6: %w", err)
	}
	return nil
}

// addrSets splits addresses into the keys of the program's IPv4 and IPv6
// address maps (IPv4-mapped IPv6 counts as IPv4).
func addrSets(addrs []netip.Addr) (map[[4]byte]bool, map[[16]byte]bool) {
	want4 := make(map[[4]byte]bool, len(addrs))
	want6 := make(map[[16]byte]bool)
	for _, a := range addrs {
		switch {
		case !a.IsValid():
		case a.Is4() || a.Is4In6():
			want4[a.Unmap().As4()] = true
		default:
			want6[a.As16()] = true
		}
	}
	return want4, want6
}

// ConfirmEpoch tells the kernel reflector that userspace verified an
// authenticated ping of epoch on the flow (peer, source port sport) and
// answered it with counters rx and ack: the kernel may now count that flow
// at this epoch, and continues from those counters unless it is already
// counting this epoch (the prober then sees one counter sequence, not the
// userspace reflector's and then the kernel's from 1).
func (l *Loader) ConfirmEpoch(peer netip.Addr, sport uint16, epoch uint32, rx, ack uint64) error {
	// Addresses as the program keys them: IPv4 in the first 4 bytes.
	k := bpfFlowKey{Sport: sport}
	if p := peer.Unmap(); p.Is4() {
		a4 := p.As4()
		copy(k.Peer[:4], a4[:])
	} else {
		k.Peer = p.As16()
	}
	var v bpfFlowVal
	if err := l.objs.Flows.Lookup(k, &v); err != nil || v.Epoch != epoch {
		v = bpfFlowVal{Epoch: epoch, Rx: rx, Ack: ack}
		if err := l.objs.Flows.Update(k, v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("flows: %w", err)
		}
	}
	if err := l.objs.ConfirmedEpochs.Update(k, epoch, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("confirmed_epochs: %w", err)
	}
	return nil
}

// declineReasons are the keyed reflector's refusals, by metric label.
var declineReasons = map[string]bpfDnmsStat{
	"no_hmac":    bpfDnmsStatDNMS_STAT_KEYED_NO_HMAC,
	"not_member": bpfDnmsStatDNMS_STAT_KEYED_NOT_MEMBER,
	"epoch":      bpfDnmsStatDNMS_STAT_KEYED_EPOCH,
}

// keyedMetrics count the pings the keyed reflector left to userspace.
func (l *Loader) keyedMetrics() prometheus.Collector {
	return &keyedCollector{l: l, desc: prometheus.NewDesc("dnms_ebpf_reflector_declined_total",
		"Pings the in-kernel reflector left to userspace because of the probe key, by reason: no_hmac, not_member, epoch (not yet confirmed by userspace).",
		[]string{"reason"}, nil)}
}

type keyedCollector struct {
	l    *Loader
	desc *prometheus.Desc
}

func (c *keyedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keyedCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, idx := range declineReasons {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.l.stat(idx)), reason)
	}
}

// declined reads the keyed reflector's refusals (nil when not keyed).
func (l *Loader) declined() map[string]uint64 {
	if !l.cfg.Keyed {
		return nil
	}
	m := make(map[string]uint64, len(declineReasons))
	for reason, idx := range declineReasons {
		m[reason] = l.stat(idx)
	}
	return m
}
