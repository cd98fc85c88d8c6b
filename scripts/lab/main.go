// Command lab builds, inspects, breaks and removes dnms's network lab: a
// leaf-spine fabric of Linux routers in network namespaces (see
// internal/lab). Needs root.
//
//	go run ./scripts/lab up    [-prefix dlab] [-spines 2] [-leaves 3] [-hosts 2] [-json]
//	go run ./scripts/lab truth [-prefix dlab]            # ground truth JSON
//	go run ./scripts/lab down  [-prefix dlab]            # delete every <prefix>-* namespace
//	go run ./scripts/lab list                            # namespaces per prefix
//	go run ./scripts/lab fault [-prefix dlab] -link leaf1-spine1 [-from leaf1] \
//	        [-loss 30] [-down|-up] [-clear] [-delay 20ms]
//
// Loss, down, up and clear change the kernel and exit. Delay needs the
// userspace delay element to keep running: `fault -delay` stays in the
// foreground until interrupted, then removes the delay.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dnms/dnms/internal/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = up(args)
	case "down":
		err = down(args)
	case "truth":
		err = truth(args)
	case "list":
		err = list(args)
	case "fault":
		err = fault(args)
	case "-h", "-help", "--help", "help":
		usage()
		return
	default:
		usage()
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: lab <command> [flags]
  up     build a fabric           -prefix -spines -leaves -hosts -json
  truth  print ground truth JSON  -prefix
  down   delete a fabric          -prefix
  list   list fabrics
  fault  inject or clear a fault  -prefix -link ID -from NODE [-loss PCT] [-delay D] [-down|-up] [-clear]
`)
}

func prefixFlag(fs *flag.FlagSet) *string {
	return fs.String("prefix", lab.DefaultConfig().Prefix, "namespace name prefix")
}

func up(args []string) error {
	def := lab.DefaultConfig()
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	prefix := prefixFlag(fs)
	spines := fs.Int("spines", def.Spines, "spine routers")
	leaves := fs.Int("leaves", def.Leaves, "leaf routers")
	hosts := fs.Int("hosts", def.HostsPerLeaf, "hosts per leaf")
	dual := fs.Int("dual", 0, "dual-homed hosts (each wired to two leaves, address on lo, ECMP default route)")
	asJSON := fs.Bool("json", false, "print the ground truth as JSON instead of a summary")
	fs.Parse(args)
	start := time.Now()
	f, err := lab.Build(lab.Config{Prefix: *prefix, Spines: *spines, Leaves: *leaves, HostsPerLeaf: *hosts, DualHomed: *dual})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(f.GroundTruth())
	}
	fmt.Printf("fabric %s up in %v: %d spines, %d leaves, %d hosts\n", *prefix, time.Since(start).Round(time.Millisecond), *spines, *leaves, len(f.Hosts))
	for _, r := range f.Routers {
		fmt.Printf("  %-8s %-6s loopback %-15s netns %s\n", r.Name, r.Role, r.Loopback, r.NS)
	}
	for _, h := range f.Hosts {
		fmt.Printf("  %-8s host   addr     %-15s netns %s (on %s)\n", h.Name, h.Addr, h.NS, h.Leaf)
	}
	fmt.Printf("try: ip netns exec %s traceroute -n -U --sport=40000 %s\n", f.Hosts[0].NS, f.Hosts[len(f.Hosts)-1].Addr)
	fmt.Printf("remove with: go run ./scripts/lab down -prefix %s\n", *prefix)
	return nil
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	prefix := prefixFlag(fs)
	fs.Parse(args)
	return lab.Destroy(*prefix)
}

func attach(prefix string) (*lab.Fabric, error) {
	cfg, err := lab.Discover(prefix)
	if err != nil {
		return nil, err
	}
	return lab.Attach(cfg)
}

func truth(args []string) error {
	fs := flag.NewFlagSet("truth", flag.ExitOnError)
	prefix := prefixFlag(fs)
	fs.Parse(args)
	f, err := attach(*prefix)
	if err != nil {
		return err
	}
	return printJSON(f.GroundTruth())
}

func list(args []string) error {
	fs := flag.NewFlagSet("list", flag.ExitOnError)
	fs.Parse(args)
	all, err := lab.LeftoverNamespaces("")
	if err != nil {
		return err
	}
	byPrefix := map[string]int{}
	for _, ns := range all {
		if p, _, ok := strings.Cut(ns, "-"); ok {
			byPrefix[p]++
		}
	}
	var ps []string
	for p := range byPrefix {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	for _, p := range ps {
		desc := "incomplete"
		if cfg, err := lab.Discover(p); err == nil {
			desc = fmt.Sprintf("%d spines, %d leaves, %d hosts per leaf", cfg.Spines, cfg.Leaves, cfg.HostsPerLeaf)
		}
		fmt.Printf("%-10s %3d namespaces  %s\n", p, byPrefix[p], desc)
	}
	return nil
}

func fault(args []string) error {
	fs := flag.NewFlagSet("fault", flag.ExitOnError)
	prefix := prefixFlag(fs)
	linkID := fs.String("link", "", "link ID, e.g. leaf1-spine1 or host1-leaf1 (see truth)")
	from := fs.String("from", "", "direction: traffic leaving this node (default: the link's first node)")
	loss := fs.Float64("loss", -1, "loss in percent (0 removes)")
	delay := fs.Duration("delay", 0, "delay; runs in the foreground until interrupted")
	setDown := fs.Bool("down", false, "set both ends of the link down")
	setUp := fs.Bool("up", false, "set both ends of the link up")
	clear := fs.Bool("clear", false, "remove every fault on the link, both directions")
	fs.Parse(args)
	f, err := attach(*prefix)
	if err != nil {
		return err
	}
	var l lab.Link
	for _, x := range f.Links {
		if x.ID == *linkID {
			l = x
		}
	}
	if l.ID == "" {
		ids := make([]string, len(f.Links))
		for i, x := range f.Links {
			ids[i] = x.ID
		}
		return fmt.Errorf("no link %q; links: %s", *linkID, strings.Join(ids, " "))
	}
	if *from == "" {
		*from = l.A.Node
	}
	did := false
	if *clear {
		if err := f.ClearFaults(l); err != nil {
			return err
		}
		did = true
	}
	if *setDown || *setUp {
		if err := f.SetDown(l, *setDown); err != nil {
			return err
		}
		did = true
	}
	if *loss >= 0 {
		if err := f.SetLoss(l, *from, *loss); err != nil {
			return err
		}
		did = true
	}
	if *delay > 0 {
		if err := f.SetDelay(l, *from, *delay); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "delaying %s from %s by %v; Ctrl-C to stop\n", l.ID, *from, *delay)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		<-ctx.Done()
		st := f.DelayStats(l, *from)
		err := errors.Join(f.SetDelay(l, *from, 0), f.Close())
		fmt.Fprintf(os.Stderr, "delay removed: %d frames, %d overflowed, lateness p50 %v p99 %v max %v\n",
			st.Sent, st.Overflow, st.LateP50, st.LateP99, st.LateMax)
		return err
	}
	if !did {
		return errors.New("nothing to do: give -loss, -delay, -down, -up or -clear")
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
