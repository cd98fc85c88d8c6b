package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dnms.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileSetsFlags(t *testing.T) {
	p := writeConfig(t, `# a comment
pingPort: 40000
mapInterval: 250ms
aggregator: true
ifaces: [eth0, eth1]
httpAllowOrigin: "https://noc.example"
`)
	c, err := parseFlags([]string{"-config", p}, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	if c.PingPort != 40000 || c.MapSrcPortStart != 40001 || c.MapInterval != 250*time.Millisecond || !c.Aggregator ||
		strings.Join(c.Ifaces, ",") != "eth0,eth1" || c.HTTPAllowOrigin != "https://noc.example" {
		t.Fatalf("config from file: %+v", c)
	}
}

func TestConfigFileCommandLineWins(t *testing.T) {
	p := writeConfig(t, "pingPort: 40000\nlogLevel: debug\n")
	for _, args := range [][]string{
		{"-config", p, "-pingPort", "41000"},
		{"-pingPort", "41000", "-config", p}, // order does not matter
	} {
		c, err := parseFlags(args, io.Discard, fixedIP)
		if err != nil {
			t.Fatal(err)
		}
		if c.PingPort != 41000 || c.LogLevel != "debug" {
			t.Errorf("%v: pingPort %d logLevel %s, want 41000 (command line) and debug (file)", args, c.PingPort, c.LogLevel)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		args       []string
		want       string // after "FILE"
	}{
		{"unknown key", "pingPort: 1\npingport: 2\n", nil, `:2: unknown key "pingport" (did you mean "pingPort"?)`},
		{"config in config", "config: other.yaml\n", nil, `:1: unknown key "config"`},
		{"wrong type int", "\n\npingPort: abc\n", nil, `:3: key "pingPort": bad value "abc" (int): parse error`},
		{"wrong type bool", "aggregator: maybe\n", nil, `:1: key "aggregator": bad value "maybe" (bool)`},
		{"wrong type duration", "mapInterval: 5\n", nil, `:1: key "mapInterval": bad value "5" (duration)`},
		{"mapping", "peer:\n  host: a\n", nil, `:2: key "peer": wrong type: a mapping, want string`},
		{"list for a single value", "pingPort: [1, 2]\n", nil, `:1: key "pingPort": wrong type: a list, want int`},
		{"no value", "peer:\n", nil, `:1: key "peer": has no value`},
		{"repeated", "peer: a:1\npeer: b:1\n", nil, `:2: key "peer" repeats line 1`},
		{"not a mapping", "- pingPort\n", nil, `:1: the config file must be a mapping`},
		{"syntax", "pingPort: 1\n  bad: [\n", nil, `:2: `},
		{"bad value", "logLevel: info\n\npingPort: 0\n", nil, `:3: key "pingPort": -pingPort must be in 1-65535, got 0`},
		{"bad value among two", "mapSrcPortStart: 40010\nmapSrcPortEnd: 40000\n", nil, `:2: key "mapSrcPortEnd": -mapSrcPortEnd 40000 is below`},
		{"bad string value", "timestamps: gps\n", nil, `:1: key "timestamps": -timestamps must be auto`},
		{"bad value overridden on the command line", "pingPort: abc\n", []string{"-pingPort", "40000"}, `:1: key "pingPort": bad value "abc" (int)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.body)
			_, err := parseFlags(append([]string{"-config", p}, tc.args...), io.Discard, fixedIP)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, p+tc.want) || strings.Contains(msg, "\n") {
				t.Fatalf("got  %q\nwant one line starting %q", msg, p+tc.want)
			}
		})
	}
	if _, err := parseFlags([]string{"-config", "/nonexistent/dnms.yaml"}, io.Discard, fixedIP); err == nil || !strings.Contains(err.Error(), "/nonexistent/dnms.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestPrintConfigRoundTrips: -print-config is a valid config file that
// gives the same configuration back, with derived defaults filled in.
func TestPrintConfigRoundTrips(t *testing.T) {
	c, err := parseFlags([]string{"-print-config", "-pingPort", "40000", "-ifaces", "eth0,eth1", "-httpAllowOrigin", `a"b: c`}, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"gossipAddr: \"198.18.0.10\"\n", "mapSrcPortStart: 40001\n", "pingPort: 40000\n", "ebpfReflector: true\n"} {
		if !strings.Contains(c.PrintConfig, line) {
			t.Errorf("-print-config lacks %q:\n%s", line, c.PrintConfig)
		}
	}
	c2, err := parseFlags([]string{"-print-config", "-config", writeConfig(t, c.PrintConfig)}, io.Discard, fixedIP)
	if err != nil {
		t.Fatal(err)
	}
	if c2.PrintConfig != c.PrintConfig {
		t.Errorf("round trip changed the configuration:\n%s\nvs\n%s", c.PrintConfig, c2.PrintConfig)
	}
}

// TestExampleConfig: docs/dnms.example.yaml is a valid config file.
func TestExampleConfig(t *testing.T) {
	if _, err := parseFlags([]string{"-config", "../../docs/dnms.example.yaml"}, io.Discard, fixedIP); err != nil {
		t.Fatal(err)
	}
}
