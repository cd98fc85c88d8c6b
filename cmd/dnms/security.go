package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/api"
	"github.com/dnms/dnms/internal/cluster"
	"github.com/dnms/dnms/internal/probe"
)

// security checks and fills the trust flags (docs/security.md): the probe
// key derived from the gossip key, the cluster TLS files, the web config,
// the connection cap.
func (c *config) security(sec config) error {
	c.TLS, c.WebConfigFile, c.HTTPMaxConns, c.StateDir = sec.TLS, sec.WebConfigFile, sec.HTTPMaxConns, sec.StateDir
	if c.FailedGrace = sec.FailedGrace; c.FailedGrace < 0 {
		return fmt.Errorf("-failedPeerGrace must not be negative, got %v", c.FailedGrace)
	}
	if c.ProbeKey == nil && c.GossipKey != nil {
		c.ProbeKey, c.ProbeKeyDerived = probe.DeriveKey(c.GossipKey), true
	}
	if c.HTTPMaxConns < 1 {
		return fmt.Errorf("-httpMaxConns must be at least 1, got %d", c.HTTPMaxConns)
	}
	if c.TLS.Enabled() {
		t, err := cluster.LoadTLS(c.TLS)
		if err != nil {
			return err
		}
		c.ClusterTLS = t
	}
	if c.StateDir != "" {
		if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
			return fmt.Errorf("-stateDir: %w", err)
		}
	}
	if c.WebConfigFile != "" {
		if err := api.ValidateWebConfig(c.WebConfigFile); err != nil {
			return err
		}
	}
	return nil
}

// trust is how the aggregator decides members proved they belong.
func (c *config) trust() aggregator.Trust {
	switch {
	case c.ClusterTLS != nil:
		return aggregator.TrustMTLS
	case c.GossipKey != nil:
		return aggregator.TrustGossipKey
	}
	return aggregator.TrustOpen
}

// logTrust says once at start what is and is not authenticated.
func (c *config) logTrust(log *slog.Logger) {
	switch {
	case c.ProbeKey == nil:
		log.Warn("probes are unauthenticated (no -probeKey, no -gossipKey): any host can forge acks and reset reflector counters; see docs/security.md")
	case c.ProbeKeyDerived:
		log.Info("probes are authenticated with a key derived from -gossipKey")
	}
}
