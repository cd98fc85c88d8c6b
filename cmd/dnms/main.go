// Command dnms is the dnms agent (and, with -aggregator, the aggregator), plus
// the offline `dnms health` analysis. It turns flags into component configs,
// wires the components together and owns their lifetimes; nothing else.
package main

import (
	"errors"
	"fmt"
	"os"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, errHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "dnms:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "version", "-version", "--version":
			fmt.Println("dnms", version)
			return nil
		case "health":
			return runHealth(args[1:])
		}
	}
	cfg, err := parseFlags(args, os.Stderr, defaultLocalIP)
	if err != nil {
		return err
	}
	if cfg.PrintConfig != "" {
		fmt.Print(cfg.PrintConfig)
		return nil
	}
	return runAgent(cfg)
}
