package cluster

import (
	"bytes"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Memberlist reports what it could not use (garbage at the gossip port, a
// packet under the wrong key, a broken stream) only as log lines; they are
// counted here by reason in dnms_cluster_rejected_messages_total, before
// the log rate limit drops any line.

// rejectReasons maps a substring of a memberlist warn/error line to a
// reason, first match wins.
var rejectReasons = []struct{ substr, reason string }{
	{"decrypt", "decrypt"},
	{"encrypt", "decrypt"},
	{"checksum", "checksum"},
	{"nknown message type", "type"},
	{"decode", "decode"},
	{"compress", "decode"},
	{"receive", "stream"},
	{"stream", "stream"},
}

func rejectReason(msg []byte) string {
	lower := bytes.ToLower(msg)
	for _, r := range rejectReasons {
		if bytes.Contains(lower, []byte(r.substr)) {
			return r.reason
		}
	}
	return "other"
}

// countReject counts one memberlist warn/error line; nil counts nothing.
func countReject(c *prometheus.CounterVec, level slog.Level, msg []byte) {
	if c == nil || level < slog.LevelWarn {
		return
	}
	c.WithLabelValues(rejectReason(msg)).Inc()
}

func newRejectCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnms_cluster_rejected_messages_total",
		Help: "Gossip traffic memberlist could not use, by reason (decrypt, checksum, type, decode, stream, other), counted from its warning and error lines.",
	}, []string{"reason"})
	for _, r := range []string{"decrypt", "checksum", "type", "decode", "stream", "other"} {
		c.WithLabelValues(r)
	}
	return c
}
