package targets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dnms/dnms/internal/probe"
)

// Target is one entry of the targets file, defaults applied.
type Target struct {
	Name  string           `json:"name"`
	Host  string           `json:"host"`
	Port  uint16           `json:"port,omitempty"`
	Probe probe.TargetKind `json:"probe"`
	// Interval between two probes of one flow; Timeout makes a probe lost.
	Interval time.Duration `json:"-"`
	Timeout  time.Duration `json:"-"`
	// Flows is the number of source ports (icmp: identifiers) probed, one
	// ECMP path each.
	Flows int `json:"flows"`
	// Trace: traceroute the target every TraceInterval and watch its path.
	Trace         bool          `json:"trace"`
	TraceInterval time.Duration `json:"-"`
	// Resolve is how often a host name is resolved again.
	Resolve time.Duration `json:"-"`
	// Line is where the entry starts in the file.
	Line int `json:"-"`
}

// Limits of the file.
const (
	MaxTargets  = 10000
	MaxFlows    = 16
	MinInterval = 10 * time.Millisecond
)

// FileError is an error at one line of the targets file.
type FileError struct {
	File string
	Line int
	Msg  string
}

func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// defaults are the file's defaults before the file's own defaults block.
func builtinDefaults() Target {
	return Target{Interval: time.Second, Timeout: time.Second, Flows: 1, TraceInterval: 10 * time.Second, Resolve: time.Minute}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$`)

// Parse reads a targets file: syntax, keys, values and duplicate names. It
// resolves nothing. Errors name file:line.
func Parse(file string, data []byte) ([]Target, error) {
	ferr := func(n *yaml.Node, format string, a ...any) error {
		line := 0
		if n != nil {
			line = n.Line
		}
		return &FileError{File: file, Line: line, Msg: fmt.Sprintf(format, a...)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			return nil, &FileError{File: file, Msg: te.Errors[0]}
		}
		return nil, &FileError{File: file, Msg: err.Error()} // yaml's message has "line N"
	}
	if len(doc.Content) == 0 {
		return nil, nil // empty file: no targets
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, ferr(root, "want a mapping with defaults and targets")
	}
	def := builtinDefaults()
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "defaults":
			if v.Kind != yaml.MappingNode {
				return nil, ferr(v, "defaults: want a mapping")
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				dk, dv := v.Content[j], v.Content[j+1]
				switch dk.Value {
				case "interval", "timeout", "flows", "trace", "traceInterval", "resolve":
					if err := setField(&def, dk.Value, dv); err != nil {
						return nil, ferr(dv, "defaults: %s: %v", dk.Value, err)
					}
				default:
					return nil, ferr(dk, "defaults: unknown key %q (want interval, timeout, flows, trace, traceInterval, resolve)", dk.Value)
				}
			}
		case "targets":
			if v.Kind != yaml.SequenceNode && !(v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
				return nil, ferr(v, "targets: want a list")
			}
			list = v
		default:
			return nil, ferr(k, "unknown key %q (want defaults, targets)", k.Value)
		}
	}
	if list == nil {
		return nil, nil
	}
	if len(list.Content) > MaxTargets {
		return nil, ferr(list, "%d targets: at most %d", len(list.Content), MaxTargets)
	}
	out := make([]Target, 0, len(list.Content))
	seen := map[string]int{}
	for _, n := range list.Content {
		t, err := parseTarget(n, def)
		if err != nil {
			return nil, ferr(err.node, "%s", err.msg)
		}
		if first, dup := seen[t.Name]; dup {
			return nil, ferr(n, "target %q: duplicate name (first at line %d)", t.Name, first)
		}
		seen[t.Name] = t.Line
		out = append(out, t)
	}
	return out, nil
}

type nodeErr struct {
	node *yaml.Node
	msg  string
}

func parseTarget(n *yaml.Node, def Target) (Target, *nodeErr) {
	bad := func(at *yaml.Node, format string, a ...any) *nodeErr {
		return &nodeErr{node: at, msg: fmt.Sprintf(format, a...)}
	}
	if n.Kind != yaml.MappingNode {
		return Target{}, bad(n, "target: want a mapping")
	}
	t := def
	t.Line = n.Line
	var portNode *yaml.Node
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := n.Content[j], n.Content[j+1]
		switch k.Value {
		case "name", "host", "probe":
			if v.Kind != yaml.ScalarNode {
				return t, bad(v, "%s: want a string", k.Value)
			}
			switch k.Value {
			case "name":
				t.Name = v.Value
			case "host":
				t.Host = v.Value
			case "probe":
				t.Probe = probe.TargetKind(v.Value)
			}
		case "port":
			p, err := strconv.ParseUint(v.Value, 10, 32)
			if v.Kind != yaml.ScalarNode || err != nil || p < 1 || p > 65535 {
				return t, bad(v, "port %q: want 1..65535", v.Value)
			}
			t.Port, portNode = uint16(p), v
		case "interval", "timeout", "flows", "trace", "traceInterval", "resolve":
			if err := setField(&t, k.Value, v); err != nil {
				return t, bad(v, "%s: %v", k.Value, err)
			}
		default:
			return t, bad(k, "unknown key %q (want name, host, port, probe, interval, timeout, flows, trace, traceInterval, resolve)", k.Value)
		}
	}
	label := fmt.Sprintf("target %q", t.Name)
	switch {
	case t.Name == "":
		return t, bad(n, "target: name missing")
	case !nameRE.MatchString(t.Name):
		return t, bad(n, "%s: name must be 1-63 letters, digits, '_', '.', ':' or '-'", label)
	case t.Host == "":
		return t, bad(n, "%s: host missing", label)
	case t.Probe == "":
		return t, bad(n, "%s: probe missing (icmp, tcp or udp)", label)
	case !t.Probe.Valid():
		return t, bad(n, "%s: unknown probe kind %q (want icmp, tcp or udp)", label, t.Probe)
	case t.Probe != probe.KindICMP && t.Port == 0:
		return t, bad(n, "%s: %s probe needs a port", label, t.Probe)
	case t.Probe == probe.KindICMP && t.Port != 0:
		return t, bad(portNode, "%s: icmp probes have no port", label)
	case t.Timeout > t.Interval:
		return t, bad(n, "%s: timeout %v longer than interval %v", label, t.Timeout, t.Interval)
	}
	return t, nil
}

// setField parses one shared key into t.
func setField(t *Target, key string, v *yaml.Node) error {
	if v.Kind != yaml.ScalarNode {
		return errors.New("want a scalar")
	}
	switch key {
	case "flows":
		n, err := strconv.Atoi(v.Value)
		if err != nil || n < 1 || n > MaxFlows {
			return fmt.Errorf("%q: want 1..%d", v.Value, MaxFlows)
		}
		t.Flows = n
		return nil
	case "trace":
		b, err := strconv.ParseBool(v.Value)
		if err != nil {
			return fmt.Errorf("%q: want true or false", v.Value)
		}
		t.Trace = b
		return nil
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil {
		return fmt.Errorf("%q: want a duration like 1s or 500ms", v.Value)
	}
	min := MinInterval
	if key == "resolve" || key == "traceInterval" {
		min = time.Second
	}
	if d < min {
		return fmt.Errorf("%v: at least %v", d, min)
	}
	switch key {
	case "interval":
		t.Interval = d
	case "timeout":
		t.Timeout = d
	case "traceInterval":
		t.TraceInterval = d
	case "resolve":
		t.Resolve = d
	}
	return nil
}

// Resolver returns every address of host (an IP literal is its own).
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

// DefaultResolver uses the system resolver.
func DefaultResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}

// Resolved is a target with the addresses its host resolved to.
type Resolved struct {
	Target
	Addrs []netip.Addr
}

// Load reads, parses and resolves the targets file. Any error, including a
// host that does not resolve, rejects the whole file.
func Load(ctx context.Context, file string, resolve Resolver) ([]Resolved, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	ts, err := Parse(file, data)
	if err != nil {
		return nil, err
	}
	out := make([]Resolved, 0, len(ts))
	for _, t := range ts {
		addrs, err := resolveHost(ctx, resolve, t)
		if err != nil {
			return nil, &FileError{File: file, Line: t.Line, Msg: err.Error()}
		}
		out = append(out, Resolved{Target: t, Addrs: addrs})
	}
	return out, nil
}

func resolveHost(ctx context.Context, resolve Resolver, t Target) ([]netip.Addr, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := resolve(rctx, t.Host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return nil, fmt.Errorf("target %q: host %q does not resolve: %v", t.Name, t.Host, err)
	}
	return addrs, nil
}
