package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// ProbeHop sends one UDP datagram from host:sport to dst:dport with the
// given TTL, the way a Paris traceroute probe does, and returns the address
// that answered with ICMP time exceeded or destination unreachable (a
// router loopback, or dst itself for port unreachable). It fails after
// timeout without an answer. Probes with different sports may run
// concurrently; the same sport on the same host may not.
func (f *Fabric) ProbeHop(host string, dst netip.Addr, sport, dport uint16, ttl int, timeout time.Duration) (netip.Addr, error) {
	var (
		udp net.PacketConn
		raw net.PacketConn
	)
	err := f.Do(host, func() error {
		var err error
		raw, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return fmt.Errorf("icmp socket: %w", err)
		}
		udp, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", sport))
		if err != nil {
			raw.Close()
			return fmt.Errorf("udp socket on port %d: %w", sport, err)
		}
		return nil
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lab: probe from %s: %w", host, err)
	}
	defer raw.Close()
	defer udp.Close()
	if err := ipv4.NewPacketConn(udp).SetTTL(ttl); err != nil {
		return netip.Addr{}, fmt.Errorf("lab: probe set ttl: %w", err)
	}
	deadline := time.Now().Add(timeout)
	if err := raw.SetReadDeadline(deadline); err != nil {
		return netip.Addr{}, err
	}
	to := &net.UDPAddr{IP: dst.AsSlice(), Port: int(dport)}
	if _, err := udp.WriteTo([]byte("dnms-lab-probe"), to); err != nil {
		return netip.Addr{}, fmt.Errorf("lab: probe send: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := raw.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return netip.Addr{}, fmt.Errorf("lab: probe %s:%d→%s:%d ttl %d: %w in %v", host, sport, dst, dport, ttl, ErrNoAnswer, timeout)
			}
			return netip.Addr{}, fmt.Errorf("lab: probe read: %w", err)
		}
		if matchICMP(buf[:n], dst, sport, dport) {
			a, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP)
			if !ok {
				continue
			}
			return a.Unmap(), nil
		}
	}
}

// matchICMP reports whether an ICMP message is an error about our UDP
// probe (inner destination dst, ports sport→dport).
func matchICMP(b []byte, dst netip.Addr, sport, dport uint16) bool {
	m, err := icmp.ParseMessage(1, b)
	if err != nil {
		return false
	}
	var inner []byte
	switch body := m.Body.(type) {
	case *icmp.TimeExceeded:
		inner = body.Data
	case *icmp.DstUnreach:
		inner = body.Data
	default:
		return false
	}
	if len(inner) < 20 || inner[0]>>4 != 4 {
		return false
	}
	ihl := int(inner[0]&0x0f) * 4
	if ihl < 20 || len(inner) < ihl+8 || inner[9] != 17 {
		return false
	}
	if netip.AddrFrom4([4]byte(inner[16:20])) != dst {
		return false
	}
	u := inner[ihl:]
	return uint16(u[0])<<8|uint16(u[1]) == sport && uint16(u[2])<<8|uint16(u[3]) == dport
}

// ErrNoAnswer is what ProbeHop returns when nobody answered in time.
var ErrNoAnswer = errors.New("no answer")

// Trace is one hop-by-hop Paris trace made of ProbeHop calls: an independent
// reference tracer for tests and benchmarks. Hops holds the zero Addr for a
// silent hop; Reached says the destination answered.
type Trace struct {
	Hops    []netip.Addr
	Reached bool
	Probes  int
}

// TraceHops probes TTL 1, 2, … from host's sport to dst:dport until dst
// answers, maxTTL is reached or maxSilent hops in a row stay silent.
func (f *Fabric) TraceHops(ctx context.Context, host string, dst netip.Addr, sport, dport uint16, maxTTL, maxSilent int, timeout time.Duration) (Trace, error) {
	var tr Trace
	silent := 0
	for ttl := 1; ttl <= maxTTL; ttl++ {
		if err := ctx.Err(); err != nil {
			return tr, err
		}
		a, err := f.ProbeHop(host, dst, sport, dport, ttl, timeout)
		tr.Probes++
		if errors.Is(err, ErrNoAnswer) {
			tr.Hops = append(tr.Hops, netip.Addr{})
			if silent++; silent >= maxSilent {
				return tr, nil
			}
			continue
		}
		if err != nil {
			return tr, err
		}
		silent = 0
		tr.Hops = append(tr.Hops, a)
		if a == dst {
			tr.Reached = true
			return tr, nil
		}
	}
	return tr, nil
}
