package targets

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rtt        *prometheus.HistogramVec
	probes     *prometheus.CounterVec
	lost       *prometheus.CounterVec
	up         *prometheus.GaugeVec
	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge
	configured prometheus.Gauge
	resolveErr prometheus.Counter
}

// rttBuckets start at 10 µs and double up to ~10 s (smokeping_prober's
// layout, started lower for datacenter RTTs).
func rttBuckets() []float64 { return prometheus.ExponentialBuckets(10e-6, 2, 21) }

func newMetrics() *metrics {
	labels := []string{"target", "probe", "addr"}
	return &metrics{
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dnms_target_rtt_seconds", Help: "RTT of answered probes to external targets (-targets).",
			Buckets: rttBuckets(), NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 100,
		}, labels),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_target_probes_total", Help: "Probes sent to external targets.",
		}, labels),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_target_lost_total", Help: "Probes to external targets without an answer within the timeout, or answered unreachable.",
		}, labels),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnms_target_up", Help: "1 if the last probe to the target address was answered, else 0.",
		}, labels),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_targets_reloads_total", Help: "Loads of the targets file, by result (success, failure: the previous set kept running).",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnms_targets_last_reload_successful", Help: "1 if the last load of the targets file succeeded.",
		}),
		configured: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnms_targets", Help: "Targets in the running set.",
		}),
		resolveErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnms_targets_resolve_errors_total", Help: "Periodic re-resolutions of a target host that failed (the previous addresses stay).",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.rtt, m.probes, m.lost, m.up, m.reloads, m.lastReload, m.configured, m.resolveErr} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) forget(target string) {
	l := prometheus.Labels{"target": target}
	m.rtt.DeletePartialMatch(l)
	m.probes.DeletePartialMatch(l)
	m.lost.DeletePartialMatch(l)
	m.up.DeletePartialMatch(l)
}
