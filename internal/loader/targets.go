package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Target probes (internal/probe target_*.go, IPv4 and IPv6): the programs stamp a
// target flow's probes at TC egress and its answers at ingress once the
// flow's (protocol, port) is watched: the echo identifier for ICMP, our
// source port for TCP and UDP. The stamps arrive through Run as
// probe.StampTargetTx / probe.StampTargetRx with Type the IP protocol.
// While nothing is watched the programs skip target parsing altogether.

// WatchTarget starts stamping the target flow of IP protocol proto
// (unix.IPPROTO_ICMP, _ICMPV6, _TCP or _UDP) with port.
func (l *Loader) WatchTarget(proto uint8, port uint16) error {
	l.nlMu.Lock()
	defer l.nlMu.Unlock()
	if l.nl == nil {
		return errors.New("ebpf loader: closed")
	}
	if err := l.objs.TargetPorts.Put(bpfDnmsTargetKey{Proto: proto, Port: port}, uint8(1)); err != nil {
		return fmt.Errorf("ebpf loader: watch target port: %w", err)
	}
	if !l.targetsOn {
		if err := l.objs.TargetsOn.Set(uint32(1)); err != nil {
			return fmt.Errorf("ebpf loader: turn target stamps on: %w", err)
		}
		l.targetsOn = true
	}
	return nil
}

// UnwatchTarget stops stamping the target flow (proto, port).
func (l *Loader) UnwatchTarget(proto uint8, port uint16) error {
	l.nlMu.Lock()
	defer l.nlMu.Unlock()
	if l.nl == nil {
		return nil // closed: nothing is stamped any more
	}
	err := l.objs.TargetPorts.Delete(bpfDnmsTargetKey{Proto: proto, Port: port})
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("ebpf loader: unwatch target port: %w", err)
	}
	return nil
}
