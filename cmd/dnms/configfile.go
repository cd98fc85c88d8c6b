package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The config file (-config FILE) is YAML with one key per flag, named like
// the flag. It is generic over the FlagSet: every flag registered in
// parseFlags gets a key, its value is checked by the flag's own Set, and a
// flag given on the command line wins over the file.

// notInFile are flags that make no sense inside a config file.
var notInFile = map[string]bool{"config": true, "print-config": true}

// applyConfigFile sets, from the YAML file at path, every flag that the
// command line did not set, recording in fromFile where each came from.
// Errors are one line: "FILE:LINE: key ...".
func applyConfigFile(fs *flag.FlagSet, path string, fromFile map[string]string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return yamlError(path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: the config file must be a mapping of flag names to values", path, root.Line)
	}
	onCLI := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCLI[f.Name] = true })
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		where := fmt.Sprintf("%s:%d", path, k.Line)
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: keys must be flag names", where)
		}
		name := k.Value
		f := fs.Lookup(name)
		if f == nil || notInFile[name] {
			return fmt.Errorf("%s: unknown key %q%s", where, name, suggest(fs, name))
		}
		if line, dup := seen[name]; dup {
			return fmt.Errorf("%s: key %q repeats line %d", where, name, line)
		}
		seen[name] = k.Line
		val, err := scalarValue(f, v)
		if err != nil {
			return fmt.Errorf("%s:%d: key %q: %v", path, v.Line, name, err)
		}
		line := v.Line
		set := func(val string) error { fromFile[name] = fmt.Sprintf("%s:%d", path, line); return fs.Set(name, val) }
		if onCLI[name] {
			// The command line wins, but the file's value must still be
			// valid: a typo is found now, not on the day the command line
			// stops overriding it.
			set = func(val string) error { return checkValue(f, val) }
		}
		if err := set(val); err != nil {
			return fmt.Errorf("%s:%d: key %q: bad value %q (%s): %v", path, v.Line, name, val, typeName(f), err)
		}
	}
	return nil
}

// blameConfigFile names the file and line of the key whose value made
// parseFlags fail ("-pingPort must be in 1-65535, got 0"), when that value
// came from the config file: the first flag the message names that was.
func blameConfigFile(err error, fromFile map[string]string) error {
	if err == nil || len(fromFile) == 0 {
		return err
	}
	msg, first, at := err.Error(), "", -1
	for name := range fromFile {
		for i := 0; ; {
			j := strings.Index(msg[i:], "-"+name)
			if j < 0 {
				break
			}
			i += j + 1 + len(name)
			if end := i; end < len(msg) && isNameByte(msg[end]) {
				continue // -mapSrcPortStart is not -mapSrcPort
			}
			if at < 0 || i-len(name)-1 < at {
				first, at = name, i-len(name)-1
			}
			break
		}
	}
	if first == "" {
		return err
	}
	return fmt.Errorf("%s: key %q: %w", fromFile[first], first, err)
}

func isNameByte(b byte) bool {
	return b == '-' || b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

// scalarValue is the flag-syntax value of a YAML node: a scalar as written,
// a list of scalars joined with commas for the comma-separated flags.
func scalarValue(f *flag.Flag, v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", errors.New("has no value")
		}
		return v.Value, nil
	case yaml.SequenceNode:
		if !strings.Contains(f.Usage, "comma-separated") {
			return "", fmt.Errorf("wrong type: a list, want %s", typeName(f))
		}
		var parts []string
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("wrong type: list items must be plain values")
			}
			parts = append(parts, e.Value)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("wrong type: a mapping, want %s", typeName(f))
}

// checkValue runs the value through a scratch flag of the same type.
func checkValue(f *flag.Flag, val string) error {
	scratch := flag.NewFlagSet("check", flag.ContinueOnError)
	scratch.SetOutput(new(bytes.Buffer))
	switch typeName(f) {
	case "bool":
		scratch.Bool("v", false, "")
	case "int":
		scratch.Int("v", 0, "")
	case "uint":
		scratch.Uint("v", 0, "")
	case "duration":
		scratch.Duration("v", 0, "")
	case "float":
		scratch.Float64("v", 0, "")
	default:
		return nil // strings and custom values: validated by parseFlags
	}
	return scratch.Set("v", val)
}

// typeName is the flag's value type as flag.PrintDefaults names it.
func typeName(f *flag.Flag) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return "bool"
	}
	switch fmt.Sprintf("%T", f.Value) {
	case "*flag.intValue", "*flag.int64Value":
		return "int"
	case "*flag.uintValue", "*flag.uint64Value":
		return "uint"
	case "*flag.durationValue":
		return "duration"
	case "*flag.float64Value":
		return "float"
	case "*flag.stringValue":
		return "string"
	}
	return "value"
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError puts a YAML syntax error in the FILE:LINE: form.
func yamlError(path string, err error) error {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s", path, m[1], m[2])
	}
	return fmt.Errorf("%s: %s", path, strings.TrimPrefix(msg, "yaml: "))
}

// suggest names a flag that differs from name only in case.
func suggest(fs *flag.FlagSet, name string) string {
	var out string
	fs.VisitAll(func(f *flag.Flag) {
		if strings.EqualFold(f.Name, name) && !notInFile[f.Name] {
			out = fmt.Sprintf(" (did you mean %q?)", f.Name)
		}
	})
	return out
}

// printConfig renders every flag's effective value as a config file
// (-print-config): keys sorted, values quoted where YAML needs it.
func printConfig(fs *flag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if !notInFile[f.Name] {
			names = append(names, f.Name)
		}
	})
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("# dnms effective configuration (dnms -print-config)\n")
	for _, n := range names {
		f := fs.Lookup(n)
		v := f.Value.String()
		switch typeName(f) {
		case "bool", "int", "uint", "float":
		default:
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, "%s: %s\n", n, v)
	}
	return b.String()
}
