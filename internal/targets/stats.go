package targets

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/dnms/dnms/internal/probe"
)

// Sample is one probe as /v1/targets/{name} serves it.
type Sample struct {
	Addr    netip.Addr   `json:"addr"`
	Time    time.Time    `json:"time"`
	SrcPort uint16       `json:"srcPort"`
	Seq     uint64       `json:"seq"`
	Lost    bool         `json:"lost"`
	RTT     float64      `json:"rttSeconds,omitempty"`
	Reply   string       `json:"reply"`
	Source  probe.Source `json:"source"`
}

// AddrStatus is what the last samples of one target address say.
type AddrStatus struct {
	Addr netip.Addr `json:"addr"`
	// Up: the last probe (any flow) was answered.
	Up bool `json:"up"`
	// Probes and Lost count since the target (re)started; Loss, the RTT
	// percentiles and jitter are over the recent samples.
	Probes  uint64       `json:"probes"`
	Lost    uint64       `json:"lost"`
	Samples int          `json:"samples"`
	Loss    float64      `json:"loss"`
	RTTMin  float64      `json:"rttMinSeconds"`
	RTTP50  float64      `json:"rttP50Seconds"`
	RTTP90  float64      `json:"rttP90Seconds"`
	RTTP99  float64      `json:"rttP99Seconds"`
	RTTMax  float64      `json:"rttMaxSeconds"`
	Jitter  float64      `json:"jitterSeconds"`
	Source  probe.Source `json:"source,omitempty"`
	// LastReply is what answered the last probe (or timeout, unreachable).
	LastReply string `json:"lastReply,omitempty"`
	// Paths are the current traced paths, one per flow (trace: true only).
	Paths []FlowPath `json:"paths,omitempty"`
}

// FlowPath is the current hop list of one traced flow.
type FlowPath struct {
	SrcPort uint16       `json:"srcPort"`
	Hops    []netip.Addr `json:"hops"`
}

// addrStats keeps the recent samples of one target address.
type addrStats struct {
	mu     sync.Mutex
	ring   []Sample
	next   int
	full   bool
	probes uint64
	lost   uint64
	last   Sample
}

func newAddrStats(n int) *addrStats { return &addrStats{ring: make([]Sample, n)} }

func (s *addrStats) add(x Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring[s.next] = x
	s.next = (s.next + 1) % len(s.ring)
	s.full = s.full || s.next == 0
	s.probes++
	if x.Lost {
		s.lost++
	}
	s.last = x
}

// samples returns the recent samples, oldest first.
func (s *addrStats) samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full {
		return slices.Clone(s.ring[:s.next])
	}
	return append(slices.Clone(s.ring[s.next:]), s.ring[:s.next]...)
}

func (s *addrStats) status(addr netip.Addr) AddrStatus {
	ss := s.samples()
	s.mu.Lock()
	st := AddrStatus{Addr: addr, Probes: s.probes, Lost: s.lost, Samples: len(ss),
		Up: s.probes > 0 && !s.last.Lost, LastReply: s.last.Reply}
	s.mu.Unlock()
	var rtts []float64
	lost := 0
	var jsum, prev float64
	nj := 0
	for _, x := range ss {
		if x.Lost {
			lost++
			continue
		}
		if len(rtts) > 0 {
			d := x.RTT - prev
			if d < 0 {
				d = -d
			}
			jsum += d
			nj++
		}
		prev = x.RTT
		rtts = append(rtts, x.RTT)
		st.Source = x.Source
	}
	if len(ss) > 0 {
		st.Loss = float64(lost) / float64(len(ss))
	}
	if nj > 0 {
		st.Jitter = jsum / float64(nj)
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		q := func(p float64) float64 {
			i := int(p*float64(len(rtts))+0.5) - 1
			return rtts[min(max(i, 0), len(rtts)-1)]
		}
		st.RTTMin, st.RTTP50, st.RTTP90, st.RTTP99, st.RTTMax = rtts[0], q(0.5), q(0.9), q(0.99), rtts[len(rtts)-1]
	}
	return st
}
