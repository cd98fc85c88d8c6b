package cluster

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRejectReason(t *testing.T) {
	for msg, want := range map[string]string{
		"failed to receive: Unknown message type (71) from=127.0.0.1:1": "type",
		"Failed to decode ping request: msgpack decode error":           "decode",
		"failed to decrypt packet: No installed keys could decrypt":     "decrypt",
		"Got invalid checksum for UDP packet":                           "checksum",
		"Failed to send gossip":                                         "other",
	} {
		if got := rejectReason([]byte(msg)); got != want {
			t.Errorf("rejectReason(%q) = %s, want %s", msg, got, want)
		}
	}
}

// TestGossipGarbageCounted: garbage on the gossip port (UDP and TCP) and a
// node with the wrong key leave the node up and are counted by reason.
func TestGossipGarbageCounted(t *testing.T) {
	key := []byte("0123456789abcdef")
	a, _ := startNode(t, "a", func(c *Config) { c.GossipKey = key })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port()))
	for _, network := range []string{"udp", "tcp"} {
		c, err := net.Dial(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			b := make([]byte, 1+i*53%900)
			for j := range b {
				b[j] = byte(i*31 + j*7)
			}
			c.Write(b)
		}
		c.Close()
	}
	startNode(t, "intruder", seeds(a), func(c *Config) { c.GossipKey = []byte("fedcba9876543210") })
	total := func() (float64, string) {
		var sum float64
		seen := ""
		for _, r := range []string{"decrypt", "checksum", "type", "decode", "stream", "other"} {
			v := testutil.ToFloat64(a.met.rejects.WithLabelValues(r))
			sum += v
			seen += fmt.Sprintf("%s=%v ", r, v)
		}
		return sum, seen
	}
	eventually(t, 10*time.Second, "garbage counted", func() (bool, string) {
		n, seen := total()
		return n >= 2, seen
	})
	if names := memberNames(a); len(names) != 1 {
		t.Fatalf("members %v: the intruder got in", names)
	}
	_, seen := total()
	t.Logf("rejected: %s", seen)
}
