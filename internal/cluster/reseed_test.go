package cluster

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

// A seed that restarts (the aggregator of a small cluster, typically) comes
// back alone, while its former members still have each other and so are not
// alone: they must notice that no seed is among them and join it again.
func TestRestartedSeedIsRejoined(t *testing.T) {
	port := freePort(t)
	seed := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	_, stopSeed := startNode(t, "seed", func(c *Config) { c.Port = port })
	b, _ := startNode(t, "b", func(c *Config) { c.Seeds = []string{seed} })
	c, _ := startNode(t, "c", func(c *Config) { c.Seeds = []string{seed} })
	eventually(t, 20*time.Second, "b and c join through the seed", func() (bool, string) {
		return len(b.Members()) == 3 && len(c.Members()) == 3, fmt.Sprint(memberNames(b), memberNames(c))
	})

	stopSeed()
	eventually(t, 20*time.Second, "b and c see the seed leave", func() (bool, string) {
		return !slices.Contains(memberNames(b), "seed") && !slices.Contains(memberNames(c), "seed"),
			fmt.Sprint(memberNames(b), memberNames(c))
	})

	seed2, _ := startNode(t, "seed", func(c *Config) { c.Port = port })
	eventually(t, 3*seedCheckEvery+10*time.Second, "the restarted seed has b and c again", func() (bool, string) {
		got := memberNames(seed2)
		return slices.Equal(got, []string{"b", "c", "seed"}), fmt.Sprint(got)
	})
}
