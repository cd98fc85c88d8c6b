package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// logBurst is how many memberlist lines at warn or above pass per second;
// the rest are counted and summarised, so garbage sprayed at the gossip port
// cannot flood the log.
const logBurst = 20

// memberlistLog adapts memberlist's "[LEVEL] memberlist: message" lines to
// slog at the matching level.
type memberlistLog struct {
	l       *slog.Logger
	rejects *prometheus.CounterVec // nil: not counted

	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

func newMemberlistLogger(l *slog.Logger, rejects ...*prometheus.CounterVec) *log.Logger {
	w := &memberlistLog{l: l.With("lib", "memberlist")}
	if len(rejects) > 0 {
		w.rejects = rejects[0]
	}
	return log.New(w, "", 0)
}

func parseLevel(p []byte) (slog.Level, []byte) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, lv := range []struct {
		tag   string
		level slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug},
		{"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelWarn},
		{"[ERR]", slog.LevelError},
		{"[ERROR]", slog.LevelError},
	} {
		if bytes.HasPrefix(msg, []byte(lv.tag)) {
			level = lv.level
			msg = bytes.TrimSpace(msg[len(lv.tag):])
			break
		}
	}
	return level, bytes.TrimPrefix(msg, []byte("memberlist: "))
}

func (w *memberlistLog) Write(p []byte) (int, error) {
	level, msg := parseLevel(p)
	countReject(w.rejects, level, msg)
	ctx := context.Background()
	if !w.l.Enabled(ctx, level) {
		return len(p), nil
	}
	if level >= slog.LevelWarn {
		w.mu.Lock()
		now := time.Now()
		if now.Sub(w.window) >= time.Second {
			if w.suppressed > 0 {
				w.l.Warn("memberlist log lines suppressed", "count", w.suppressed, "per", time.Second)
			}
			w.window, w.n, w.suppressed = now, 0, 0
		}
		w.n++
		drop := w.n > logBurst
		if drop {
			w.suppressed++
		}
		w.mu.Unlock()
		if drop {
			return len(p), nil
		}
	}
	w.l.Log(ctx, level, string(msg))
	return len(p), nil
}
