package cluster

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	members      *prometheus.GaugeVec   // role
	events       *prometheus.CounterVec // type
	incompatible *prometheus.CounterVec // reason
	rejects      *prometheus.CounterVec // reason (rejects.go)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnms_cluster_members",
			Help: "Compatible cluster members by role, this node included.",
		}, []string{"role"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_cluster_events_total",
			Help: "Membership events from memberlist, by type (join, leave, update; restart: a known member came back as a new process; fail: a member declared dead starts its grace).",
		}, []string{"type"}),
		incompatible: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_cluster_incompatible_total",
			Help: "Members ignored because their meta was undecodable or incompatible, by reason (counted once per member and reason).",
		}, []string{"reason"}),
		rejects: newRejectCounter(),
	}
	for _, r := range []string{RoleAgent, RoleAggregator} {
		m.members.WithLabelValues(r)
	}
	for _, t := range []string{"join", "leave", "update"} {
		m.events.WithLabelValues(t)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.members, m.events, m.incompatible, m.rejects} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
