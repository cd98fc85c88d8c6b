package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestRestartedSeedRejoinsWithoutState: a seed killed without a leave
// message and restarted at once, with no state directory and no seeds of
// its own, knows no one. The member that probes it gets an ack from another
// instance than the seed's meta advertises and joins it: both see each
// other within 5 s (memberlist's LAN timings; its push-pull would take
// 30 s), and the member is told the seed restarted.
func TestRestartedSeedRejoinsWithoutState(t *testing.T) {
	lan := func(c *Config) { c.Tune = func(*memberlist.Config) {} }
	a, stopA := startNode(t, "seed", lan)
	port := a.Port()
	b := newNode(t, "b", seeds(a), lan)
	r := restartRecorder{newRecorder()}
	b.AddHandler(r)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	runNode(t, b)
	eventually(t, 10*time.Second, "b joined the seed", func() (bool, string) {
		return len(a.Members()) == 2, fmt.Sprint(memberNames(a))
	})
	if err := a.Shutdown(); err != nil { // as kill -9: no leave message
		t.Fatal(err)
	}
	stopA()
	start := time.Now()
	a2, _ := startNode(t, "seed", lan, func(c *Config) { c.Port = port })
	eventually(t, 5*time.Second, "restarted seed and b see each other", func() (bool, string) {
		return slices.Equal(memberNames(a2), []string{"b", "seed"}), fmt.Sprint(memberNames(a2), memberNames(b))
	})
	t.Logf("restarted seed rejoined in %v", time.Since(start).Round(time.Millisecond))
	eventually(t, 5*time.Second, "b told of the restart", func() (bool, string) {
		got, _ := r.snapshot()
		return slices.Contains(got, "restart seed") || slices.Equal(got, []string{"join seed", "leave seed", "join seed"}), fmt.Sprint(got)
	})
}
