package cluster

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestRestartedSeedRejoinsFromState: a seed killed without a leave message
// and restarted at once is still alive, at its old incarnation, in the
// other members' view, and they have no reason to contact it (the member's
// seed looks present). With -stateDir the restarted seed joins the members
// it knew itself, and memberlist refutes the stale state: both sides see
// each other again within 5 s. Members use memberlist's LAN timings (failure
// detection takes longer than the 5 s budget), as in production.
func TestRestartedSeedRejoinsFromState(t *testing.T) {
	dir := t.TempDir()
	lan := func(mc *memberlist.Config) {} // memberlist.DefaultLANConfig timings
	withState := func(c *Config) { c.StateDir, c.Tune = dir, lan }
	a, stopA := startNode(t, "seed", withState)
	port := a.Port()
	b, _ := startNode(t, "b", seeds(a), func(c *Config) { c.Tune = lan })
	eventually(t, 10*time.Second, "b joined the seed", func() (bool, string) {
		return len(a.Members()) == 2, fmt.Sprint(memberNames(a))
	})
	eventually(t, 5*time.Second, "state file names b", func() (bool, string) {
		raw, _ := os.ReadFile(filepath.Join(dir, stateFile))
		return strings.Contains(string(raw), `"b"`), string(raw)
	})

	if err := a.Shutdown(); err != nil { // as kill -9: no leave message
		t.Fatal(err)
	}
	stopA()
	start := time.Now()
	// Started like the agent does: Start long before Run. The node's own
	// join event rewrites the state file at Start; the members it listed
	// must still be joined.
	a2 := newNode(t, "seed", withState, func(c *Config) { c.Port = port })
	if err := a2.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "own join event rewrote the state file", func() (bool, string) {
		raw, _ := os.ReadFile(filepath.Join(dir, stateFile))
		return !strings.Contains(string(raw), `"b"`), string(raw)
	})
	runNode(t, a2)
	eventually(t, 5*time.Second, "restarted seed and b see each other", func() (bool, string) {
		return slices.Equal(memberNames(a2), []string{"b", "seed"}) && slices.Equal(memberNames(b), []string{"b", "seed"}), fmt.Sprint(memberNames(a2), memberNames(b))
	})
	t.Logf("restarted seed rejoined in %v", time.Since(start).Round(time.Millisecond))
}

func TestParseState(t *testing.T) {
	got, err := parseState([]byte(`{"members":[{"name":"me","gossip":"198.18.0.1:33434"},{"name":"b","gossip":"198.18.0.2:33434"},{"name":"c","gossip":"nonsense"},{"name":"d","gossip":"[fd00::1]:7946"},{"name":"e","gossip":"198.18.0.3:0"}]}`), "me")
	if err != nil || !slices.Equal(got, []string{"198.18.0.2:33434", "[fd00::1]:7946"}) {
		t.Fatalf("parseState = %v, %v", got, err)
	}
	if _, err := parseState([]byte("{"), "me"); err == nil {
		t.Error("truncated JSON accepted")
	}
}

// FuzzParseState: a members file is read back after a crash, possibly
// half-written by hand; it never panics and yields only addr:port values.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"members":[{"name":"b","gossip":"198.18.0.2:33434"}]}`))
	f.Add([]byte(`{"members":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, _ := parseState(b, "me")
		for _, s := range out {
			if _, err := netip.ParseAddrPort(s); err != nil {
				t.Fatalf("parseState gave %q", s)
			}
		}
	})
}
