package cluster

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// stateFile is where a node with Config.StateDir keeps the members it knew,
// so that after a restart it joins them itself instead of waiting for them
// to notice (they still hold its old incarnation as alive, so nobody would
// contact it until the next push-pull: 20-40 s). Joining makes memberlist
// refute the stale state with a higher incarnation at once.
const stateFile = "members.json"

type memberState struct {
	Members []stateMember `json:"members"`
}

type stateMember struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"` // addr:port
}

// saveState writes the known members (but this node) to the state
// directory, atomically. Called by the dispatcher once per batch of events
// that changed a member.
func (c *Cluster) saveState() {
	if c.cfg.StateDir == "" {
		return
	}
	var st memberState
	for _, p := range c.known {
		if p.Name == c.cfg.NodeName {
			continue
		}
		st.Members = append(st.Members, stateMember{Name: p.Name, Gossip: netip.AddrPortFrom(p.Addr, p.GossipPort).String()})
	}
	slices.SortFunc(st.Members, func(a, b stateMember) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	b, err := json.Marshal(st)
	if err != nil {
		return
	}
	tmp, err := os.CreateTemp(c.cfg.StateDir, stateFile+".*")
	if err != nil {
		c.log.Warn("state: save members", "dir", c.cfg.StateDir, "err", err)
		return
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp.Name())
		c.log.Warn("state: save members", "dir", c.cfg.StateDir, "err", werr, "close", cerr)
		return
	}
	if err := os.Rename(tmp.Name(), filepath.Join(c.cfg.StateDir, stateFile)); err != nil {
		os.Remove(tmp.Name())
		c.log.Warn("state: save members", "dir", c.cfg.StateDir, "err", err)
	}
}

// loadState returns the gossip addresses of the members this node knew
// before it restarted (none without a state directory or file).
func (c *Cluster) loadState() []string {
	if c.cfg.StateDir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(c.cfg.StateDir, stateFile))
	if err != nil {
		if !os.IsNotExist(err) {
			c.log.Warn("state: read members", "dir", c.cfg.StateDir, "err", err)
		}
		return nil
	}
	out, err := parseState(b, c.cfg.NodeName)
	if err != nil {
		c.log.Warn("state: members file is not valid, ignoring it", "file", filepath.Join(c.cfg.StateDir, stateFile), "err", err)
	}
	return out
}

// parseState reads a members file: the gossip addresses of the members but
// self. Entries that are not addr:port are skipped.
func parseState(b []byte, self string) ([]string, error) {
	var st memberState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	var out []string
	for _, m := range st.Members {
		if ap, err := netip.ParseAddrPort(m.Gossip); err == nil && m.Name != self && ap.Port() != 0 {
			out = append(out, ap.String())
		}
	}
	return out, nil
}

// rejoinKnown joins the members from the state file after a restart,
// retrying briefly (they may be restarting too), until one answers.
func (c *Cluster) rejoinKnown(ctx context.Context, known []string) {
	wait := 100 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := c.Join(known)
		if n > 0 {
			c.log.Info("rejoined the members known before the restart", "contacted", n, "known", len(known))
			return
		}
		if wait == 100*time.Millisecond {
			c.log.Info("members known before the restart did not answer yet, retrying", "known", known, "err", err)
		}
		if time.Now().After(deadline) {
			c.log.Warn("no member known before the restart answered", "known", known, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-c.stop:
			return
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
		wait = min(wait*2, 2*time.Second)
	}
}
