package cluster

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"key 16", func(c *Config) { c.GossipKey = make([]byte, 16) }, ""},
		{"key 24", func(c *Config) { c.GossipKey = make([]byte, 24) }, ""},
		{"key 32", func(c *Config) { c.GossipKey = make([]byte, 32) }, ""},
		{"key 15", func(c *Config) { c.GossipKey = make([]byte, 15) }, "gossip key is 15 bytes"},
		{"key 33", func(c *Config) { c.GossipKey = make([]byte, 33) }, "gossip key is 33 bytes"},
		{"role", func(c *Config) { c.Role = "spine" }, "role"},
		{"port high", func(c *Config) { c.Port = 70000 }, "out of range"},
		{"port negative", func(c *Config) { c.Port = -1 }, "out of range"},
		{"no ping port", func(c *Config) { c.PingPort = 0 }, "ping port"},
		{"no http port", func(c *Config) { c.HTTPPort = 0 }, "HTTP port"},
		{"backoff", func(c *Config) { c.JoinBackoffMax = c.JoinBackoffMin / 2 }, "backoff"},
		{"long version", func(c *Config) { c.Version = strings.Repeat("1", 300) }, "version string"},
		{"empty seed", func(c *Config) { c.Seeds = []string{" "} }, "empty seed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.AdvertiseAddr = lo
			tc.mod(&c)
			err := c.validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				if !strings.HasSuffix(c.NodeName, "-127.0.0.1") {
					t.Fatalf("default node name %q", c.NodeName)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validate: got %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDefaultRouteIface(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth1	00000000	010012C6	0003	0	0	200	00000000	0	0	0
eth0	00000000	010012C6	0003	0	0	100	00000000	0	0	0
eth2	00000000	010012C6	0002	0	0	1	00000000	0	0	0
eth0	000012C6	00000000	0001	0	0	0	00FFFFFF	0	0	0
`
	if got := defaultRouteIface(strings.NewReader(table)); got != "eth0" {
		t.Fatalf("defaultRouteIface = %q, want eth0 (lowest metric among up default routes)", got)
	}
	if got := defaultRouteIface(strings.NewReader("Iface\tDestination\n")); got != "" {
		t.Fatalf("no default route: got %q", got)
	}
}

func TestDefaultAddr(t *testing.T) {
	a, err := DefaultAddr()
	if err != nil {
		t.Skipf("no usable address on this machine: %v", err)
	}
	if !a.IsGlobalUnicast() {
		t.Fatalf("DefaultAddr = %s, not global unicast", a)
	}
}
