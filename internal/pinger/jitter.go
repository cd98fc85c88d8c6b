package pinger

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// peerJitter is RFC 3550 interarrival jitter over one peer's acked pings,
// whatever their port: J += (|D| - J) / 16, D the difference between two
// consecutive round-trip times.
type peerJitter struct {
	last time.Duration
	j    float64 // seconds
	n    int
}

// observeJitter folds one acked ping's RTT into its peer's jitter.
func (p *Pinger) observeJitter(peer netip.Addr, rtt time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pj := p.jitter[peer]
	if pj == nil {
		pj = &peerJitter{}
		p.jitter[peer] = pj
	}
	if pj.n > 0 {
		d := (rtt - pj.last).Seconds()
		if d < 0 {
			d = -d
		}
		pj.j += (d - pj.j) / 16
	}
	pj.last = rtt
	pj.n++
}

var descPeerJitter = prometheus.NewDesc("dnms_probe_jitter_seconds",
	"RFC 3550 interarrival jitter of the round-trip time of the pings to a peer (all its ports).", []string{"peer"}, nil)

type jitterCollector struct{ p *Pinger }

func (p *Pinger) jitterCollector() prometheus.Collector { return jitterCollector{p} }

func (c jitterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descPeerJitter }

func (c jitterCollector) Collect(ch chan<- prometheus.Metric) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	for a, pj := range c.p.jitter {
		if pj.n > 1 {
			ch <- prometheus.MustNewConstMetric(descPeerJitter, prometheus.GaugeValue, pj.j, a.String())
		}
	}
}
