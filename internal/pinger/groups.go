package pinger

import (
	"cmp"
	"net/netip"
	"slices"
)

// PeerGroups is how one peer's mapped ports are pinged: each group is one
// schedule, one ping per RouteInterval, its ports taking turns.
type PeerGroups struct {
	Peer netip.Addr `json:"peer"`
	// PortsMapped counts the ports with a route (all are pinged in turn);
	// Schedules is the pings per RouteInterval, one per group.
	PortsMapped int     `json:"portsMapped"`
	Schedules   int     `json:"schedules"`
	Groups      []Group `json:"groups"`
}

// Group is the ports that share one schedule: the same forward and reverse
// route. Both are empty for a port pinged alone because a route is unknown
// (or -pingEveryPort).
type Group struct {
	Forward string   `json:"forwardRoute,omitempty"`
	Reverse string   `json:"reverseRoute,omitempty"`
	Ports   []uint16 `json:"ports"`
}

// Groups reports the schedules of every peer with flows, as of the last
// visit, sorted by peer; groups sorted by their first port.
func (p *Pinger) Groups() []PeerGroups {
	p.mu.Lock()
	defer p.mu.Unlock()
	byPeer := make(map[netip.Addr]*PeerGroups)
	for tk, t := range p.turns {
		pg := byPeer[tk.peer]
		if pg == nil {
			pg = &PeerGroups{Peer: tk.peer}
			byPeer[tk.peer] = pg
		}
		ports := slices.Clone(t.ports)
		slices.Sort(ports)
		pg.Groups = append(pg.Groups, Group{Forward: tk.fwd, Reverse: tk.rev, Ports: ports})
		pg.PortsMapped += len(ports)
		pg.Schedules++
	}
	out := make([]PeerGroups, 0, len(byPeer))
	for _, pg := range byPeer {
		slices.SortFunc(pg.Groups, func(a, b Group) int { return cmp.Compare(a.Ports[0], b.Ports[0]) })
		out = append(out, *pg)
	}
	slices.SortFunc(out, func(a, b PeerGroups) int { return a.Peer.Compare(b.Peer) })
	return out
}
