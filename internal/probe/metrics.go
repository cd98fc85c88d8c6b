package probe

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rejected        *prometheus.CounterVec
	source          *prometheus.GaugeVec
	userspacePings  prometheus.Counter
	reflected       prometheus.Counter
	kernelReflected prometheus.Counter
	reflNoSocket    prometheus.Counter
	pingsSent       prometheus.Counter
	acksReceived    prometheus.Counter
	sendErrors      prometheus.Counter
	resultsDropped  prometheus.Counter
	stampsUnmatched prometheus.Counter
	strayPackets    prometheus.Counter
	icmpUnmatched   prometheus.Counter
	traceProbes     prometheus.Counter
	traceAnswers    *prometheus.CounterVec
	readErrors      prometheus.Counter
	funcs           []prometheus.Collector
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newMetrics(e *Engine) metrics {
	m := metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_packets_rejected_total",
			Help: "dnms datagrams rejected, by reason (short, oversized, magic, version, type, hmac, replay, unknown_flow).",
		}, []string{"reason"}),
		source: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnms_timestamp_source",
			Help: "1 for the timestamp source in use (ebpf, kernel or user), 0 for the others.",
		}, []string{"source"}),
		userspacePings:  counter("dnms_reflector_userspace_pings_total", "Pings and trace probes to our ping port that userspace saw (whether or not it reflected them)."),
		reflected:       counter("dnms_reflector_acks_sent_total", "Mirrored acks and trace-acks sent by the userspace reflector."),
		kernelReflected: counter("dnms_reflector_kernel_pings_total", "Pings the in-kernel reflector answered (from eBPF reflect stamps, if enabled)."),
		reflNoSocket:    counter("dnms_reflector_no_socket_total", "Pings from a source port outside our source port range: cannot be mirrored."),
		pingsSent:       counter("dnms_probe_pings_sent_total", "Pings sent."),
		acksReceived:    counter("dnms_probe_acks_received_total", "Acks matched to a pending ping in time."),
		sendErrors:      counter("dnms_probe_send_errors_total", "sendmsg failures (reported as forward loss)."),
		resultsDropped:  counter("dnms_probe_results_dropped_total", "Results dropped because nobody read the Results channel."),
		stampsUnmatched: counter("dnms_probe_stamps_unmatched_total", "eBPF stamps that matched no pending probe."),
		strayPackets:    counter("dnms_probe_stray_packets_total", "Datagrams received on a source-port socket (nothing should arrive there)."),
		icmpUnmatched:   counter("dnms_probe_icmp_unmatched_total", "ICMP errors that quote no trace probe of a running trace."),
		traceProbes:     counter("dnms_trace_probes_sent_total", "Trace probes sent."),
		traceAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_trace_answers_total",
			Help: "Trace probes answered (by a router or the peer), by the time source of the hop's RTT: ebpf (TC egress to arrival, both stamped in the kernel) or user.",
		}, []string{"source"}),
		readErrors: counter("dnms_probe_read_errors_total", "Unexpected recvmsg errors on probe sockets (the socket keeps reading)."),
	}
	for _, s := range []Source{SourceEBPF, SourceKernel, SourceUser} {
		m.source.WithLabelValues(string(s)).Set(0)
	}
	for _, s := range []Source{SourceEBPF, SourceUser} {
		m.traceAnswers.WithLabelValues(string(s))
	}
	for _, r := range AllRejectReasons() {
		m.rejected.WithLabelValues(r.String())
	}
	stat := func(name, help string, f func(matcherStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(e.m.stats())) })
	}
	m.funcs = []prometheus.Collector{
		stat("dnms_acks_late_total", "Acks that arrived after their ping timed out (the ping stays lost).",
			func(s matcherStats) uint64 { return s.late }),
		stat("dnms_acks_duplicate_total", "Duplicate or replayed acks (also counted as rejected reason=replay).",
			func(s matcherStats) uint64 { return s.duplicate }),
		stat("dnms_acks_reordered_total", "Acks that arrived after the ack of a later ping.",
			func(s matcherStats) uint64 { return s.reordered }),
		stat("dnms_timestamp_fallbacks_total", "Samples that used a lower time source because a stamp of the chosen one did not arrive in time.",
			func(s matcherStats) uint64 { return s.stampFallback }),
		stat("dnms_timestamp_arrival_rejected_total", "eBPF samples whose stack arrival stamp put the ack before the ping could have returned; the TC hook's stamp was used instead.",
			func(s matcherStats) uint64 { return s.arrivalRejected }),
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	cs := []prometheus.Collector{m.rejected, m.source, m.userspacePings, m.reflected, m.kernelReflected, m.reflNoSocket,
		m.pingsSent, m.acksReceived, m.sendErrors, m.resultsDropped, m.stampsUnmatched, m.strayPackets, m.icmpUnmatched, m.traceProbes, m.traceAnswers, m.readErrors}
	var errs []error
	for _, c := range append(cs, m.funcs...) {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

func (m *metrics) reject(r RejectReason) { m.rejected.WithLabelValues(r.String()).Inc() }
