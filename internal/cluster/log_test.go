package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestMemberlistLog(t *testing.T) {
	var buf bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	l.Printf("[WARN] memberlist: Was able to connect to b over TCP but UDP probes failed")
	l.Printf("[ERR] memberlist: Failed to decode ping")
	l.Printf("no level")
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="Stream connection from=127.0.0.1:1" lib=memberlist`,
		`level=WARN msg="Was able to connect`,
		`level=ERROR msg="Failed to decode ping"`,
		`level=INFO msg="no level"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %q:\n%s", want, out)
		}
	}
}

func TestMemberlistLogLimitsErrors(t *testing.T) {
	var buf bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	for range 1000 {
		l.Printf("[ERR] memberlist: garbage")
	}
	if n := strings.Count(buf.String(), "garbage"); n != logBurst {
		t.Fatalf("%d error lines logged in a burst of 1000, want %d", n, logBurst)
	}
}
