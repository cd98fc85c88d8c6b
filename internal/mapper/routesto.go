package mapper

import (
	"cmp"
	"net/netip"
	"slices"
)

// RoutesTo is the /v1/mapper/routes-to/{addr} document: the route each
// source port takes from this host to Peer. With mirrored acks, a ping that
// Peer sends here from source port S is acked from this host's port S to
// Peer, the very flow this mapper traces on port S: these are Peer's
// reverse routes, which Peer's pinger needs to ping one port per distinct
// (forward route, reverse route) pair.
type RoutesTo struct {
	Peer netip.Addr `json:"peer"`
	// Traced: this host traces Peer (the probe plan picked it). When false
	// Ports is empty and Peer must treat every reverse route as unknown.
	Traced bool        `json:"traced"`
	Ports  []PortRoute `json:"ports"`
}

// PortRoute is one source port's route id (the graph's route id).
type PortRoute struct {
	SrcPort uint16 `json:"srcPort"`
	RouteID string `json:"routeId"`
}

// RoutesTo returns the route of every traced source port towards peer,
// sorted by port. Ports without a route (not traced yet, or never reached
// the peer) are left out.
func (m *Mapper) RoutesTo(peer netip.Addr) RoutesTo {
	peer = peer.Unmap()
	out := RoutesTo{Peer: peer, Ports: []PortRoute{}}
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.peers[peer]
	if ps == nil {
		return out
	}
	out.Traced = true
	for port, st := range ps.ports {
		if st.route != nil && st.routeID != "" {
			out.Ports = append(out.Ports, PortRoute{SrcPort: port, RouteID: st.routeID})
		}
	}
	slices.SortFunc(out.Ports, func(a, b PortRoute) int { return cmp.Compare(a.SrcPort, b.SrcPort) })
	return out
}
