package main

import (
	"log/slog"
	"net/netip"
	"sync"

	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/loader"
)

// confirmEpoch passes the userspace reflector's authenticated epochs to the
// keyed kernel reflector.
func (p *probes) confirmEpoch(log *slog.Logger) func(netip.Addr, uint16, uint32, uint64, uint64) {
	ld := p.ld
	return func(peer netip.Addr, sport uint16, epoch uint32, rx, ack uint64) {
		if err := ld.ConfirmEpoch(peer, sport, epoch, rx, ack); err != nil {
			log.Warn("kernel reflector: confirm epoch", "peer", peer, "err", err)
		}
	}
}

// memberSync keeps the keyed kernel reflector's member set equal to the
// cluster's members (this node included): it answers only their pings.
type memberSync struct {
	ld  *loader.Loader
	log *slog.Logger

	mu    sync.Mutex
	addrs map[string]netip.Addr // by member name
}

var _ cluster.Handler = (*memberSync)(nil)

func newMemberSync(ld *loader.Loader, log *slog.Logger) *memberSync {
	return &memberSync{ld: ld, log: log, addrs: map[string]netip.Addr{}}
}

func (m *memberSync) PeerJoin(p cluster.Peer)  { m.update(p.Name, p.Addr, true) }
func (m *memberSync) PeerLeave(p cluster.Peer) { m.update(p.Name, p.Addr, false) }

func (m *memberSync) update(name string, addr netip.Addr, join bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if join {
		m.addrs[name] = addr
	} else {
		delete(m.addrs, name)
	}
	all := make([]netip.Addr, 0, len(m.addrs))
	for _, a := range m.addrs {
		all = append(all, a)
	}
	if err := m.ld.SetMembers(all); err != nil {
		m.log.Warn("kernel reflector: member set", "err", err)
	}
}
