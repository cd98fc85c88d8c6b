package mapper

import (
	"net/netip"

	"github.com/dnms/dnms/internal/graph"
)

// buildRoute turns a trace's hops into the full route the graph stores:
// local host, the hops, then the peer, which appears exactly once and last
// whether or not the tracer listed it as the final hop. Silent hops stay
// zero addresses; the graph turns them into placeholders.
func buildRoute(local, peer netip.Addr, hops []graph.Hop) []graph.Hop {
	// Drop what the tracer reported at or past the destination: the peer
	// itself (a trace-ack or port unreachable) and any silent slots a tracer
	// with several TTLs in flight may have appended after it.
	end := len(hops)
	for i, h := range hops {
		if h.Addr.IsValid() && h.Addr.Unmap() == peer {
			end = i
			break
		}
	}
	route := make([]graph.Hop, 0, end+2)
	route = append(route, graph.Hop{Addr: local})
	for _, h := range hops[:end] {
		if h.Addr.IsValid() {
			h.Addr = h.Addr.Unmap()
		}
		route = append(route, h)
	}
	var last graph.Hop
	if end < len(hops) {
		last = hops[end]
	}
	last.Addr = peer
	return append(route, last)
}

// hopStrings writes a route as addresses, silentAddr for silent hops.
func hopStrings(route []graph.Hop) []string {
	s := make([]string, len(route))
	for i, h := range route {
		if h.Addr.IsValid() {
			s[i] = h.Addr.String()
		} else {
			s[i] = silentAddr
		}
	}
	return s
}
