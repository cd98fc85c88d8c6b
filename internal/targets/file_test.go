package targets

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const example = `defaults: {interval: 1s, timeout: 1s}
targets:
  - {name: gw, host: 198.18.1.0, probe: icmp}
  - {name: web, host: 198.18.2.1, port: 8080, probe: tcp}
  - {name: dns, host: 198.18.3.1, port: 53, probe: udp, trace: true, interval: 5s}
`

func TestParseExample(t *testing.T) {
	ts, err := Parse("t.yml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 {
		t.Fatalf("%d targets", len(ts))
	}
	dns := ts[2]
	if dns.Name != "dns" || dns.Port != 53 || dns.Probe != "udp" || !dns.Trace || dns.Interval != 5*time.Second ||
		dns.Timeout != time.Second || dns.Flows != 1 || dns.Line != 5 {
		t.Fatalf("dns: %+v", dns)
	}
	if ts[0].Interval != time.Second || ts[0].Trace {
		t.Fatalf("gw: %+v", ts[0])
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ name, file, want string }{
		{"unknown key", "targets:\n  - {name: a, host: 198.18.0.1, probe: icmp, colour: red}\n", `t.yml:2: unknown key "colour"`},
		{"unknown top key", "target:\n  - {}\n", `t.yml:1: unknown key "target"`},
		{"bad port", "targets:\n  - name: a\n    host: 198.18.0.1\n    probe: tcp\n    port: 70000\n", `t.yml:5: port "70000": want 1..65535`},
		{"no port", "targets:\n  - {name: a, host: 198.18.0.1, probe: udp}\n", `t.yml:2: target "a": udp probe needs a port`},
		{"unknown kind", "targets:\n  - {name: a, host: 198.18.0.1, probe: http}\n", `t.yml:2: target "a": unknown probe kind "http"`},
		{"duplicate", "targets:\n  - {name: a, host: 198.18.0.1, probe: icmp}\n  - {name: a, host: 198.18.0.2, probe: icmp}\n", `t.yml:3: target "a": duplicate name (first at line 2)`},
		{"bad interval", "defaults: {interval: fast}\n", `t.yml:1: defaults: interval: "fast"`},
		{"tiny interval", "targets:\n  - {name: a, host: h, probe: icmp, interval: 1ms}\n", `t.yml:2: interval: 1ms: at least 10ms`},
		{"flows", "targets:\n  - {name: a, host: h, probe: icmp, flows: 99}\n", `flows: "99": want 1..16`},
		{"timeout", "targets:\n  - {name: a, host: h, probe: icmp, interval: 1s, timeout: 2s}\n", `timeout 2s longer than interval 1s`},
		{"bad name", "targets:\n  - {name: 'a b', host: h, probe: icmp}\n", `name must be`},
		{"syntax", "targets: [\n", `t.yml: yaml:`},
		{"not a list", "targets: 3\n", `t.yml:1: targets: want a list`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.yml", []byte(c.file))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestLoadUnresolvable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.yml")
	os.WriteFile(p, []byte("targets:\n  - {name: a, host: 198.18.0.1, probe: icmp}\n  - {name: b, host: nowhere.invalid, probe: icmp}\n"), 0o644)
	res := func(_ context.Context, h string) ([]netip.Addr, error) {
		if a, err := netip.ParseAddr(h); err == nil {
			return []netip.Addr{a}, nil
		}
		return nil, errors.New("no such host")
	}
	_, err := Load(context.Background(), p, res)
	if err == nil || !strings.HasSuffix(err.Error(), `t.yml:3: target "b": host "nowhere.invalid" does not resolve: no such host`) {
		t.Fatalf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("targets:\n  - {name: a, host: h, probe: tcp, port: 1}\n"))
	f.Add([]byte("defaults: {flows: 3}\ntargets: []\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := Parse("f.yml", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yml") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		names := map[string]bool{}
		for _, x := range ts {
			if names[x.Name] || !x.Probe.Valid() || x.Flows < 1 || x.Flows > MaxFlows || x.Interval < MinInterval || x.Timeout > x.Interval {
				t.Fatalf("invalid target accepted: %+v", x)
			}
			names[x.Name] = true
		}
	})
}
