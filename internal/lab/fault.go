package lab

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"time"
)

// dirKey names one direction of one link: traffic leaving From on Link.
type dirKey struct {
	Link string
	From string
}

// dirFault is the fault state of one direction.
type dirFault struct {
	link     Link
	near     Endpoint // sender side (From)
	far      Endpoint // receiver side
	permille int      // loss, 0..1000
	delay    time.Duration
	de       *delayElement
}

func (f *Fabric) direction(l Link, from string) (*dirFault, error) {
	if l.ID == "" {
		return nil, errors.New("lab: fault on the zero Link (LinkBetween found no such link?)")
	}
	var known bool
	for _, x := range f.Links {
		if x.ID == l.ID {
			l, known = x, true
		}
	}
	if !known {
		return nil, fmt.Errorf("lab: no link %q in fabric %s", l.ID, f.Config.Prefix)
	}
	near, far, ok := endpointOf(l, from)
	if !ok {
		return nil, fmt.Errorf("lab: link %s has no end on %q (ends %s, %s)", l.ID, from, l.A.Node, l.B.Node)
	}
	k := dirKey{l.ID, from}
	df := f.faults[k]
	if df == nil {
		df = &dirFault{link: l, near: near, far: far}
		f.faults[k] = df
	}
	return df, nil
}

// nft table names: one per interface and hook, in that interface's namespace.
func ingressTable(ifname string) string { return "dnmslab_in_" + ifname }
func egressTable(ifname string) string  { return "dnmslab_out_" + ifname }

// nftScript replaces table `name` (family netdev) with one base chain on
// hook of device dev holding rules; no rules removes the table.
func nftScript(name, hook, dev string, rules []string) string {
	var b strings.Builder
	// Create-then-delete makes the delete safe when the table is absent;
	// nft -f applies the whole script as one transaction.
	fmt.Fprintf(&b, "table netdev %s\ndelete table netdev %s\n", name, name)
	if len(rules) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "table netdev %s {\n\tchain c {\n\t\ttype filter hook %s device %q priority -500; policy accept;\n", name, hook, dev)
	for _, r := range rules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// ingressRules are the rules on the receiver's ingress for this direction.
// Only IP frames are touched: ARP must survive, or a one-way fault would
// also kill the reverse direction once the neighbour entry expired.
func (df *dirFault) ingressRules() []string {
	if df.de != nil && df.de.mode == modeIngress {
		// Originals are captured by the delay element's tap and dropped
		// here; its delayed copies carry delayMAC as source.
		return []string{fmt.Sprintf("meta protocol { ip, ip6 } ether saddr != %s drop", delayMAC)}
	}
	return nil
}

// egressRules are the rules on the sender's egress: the loss, then the
// delay element's tap. Loss sits on the sender's egress so a dropped packet
// never reaches the receiving interface: on a leaf→host link a drop at the
// host's ingress would run after the host's TC ingress hook, where the
// eBPF reflector has already answered (50% loss there looked like none).
func (df *dirFault) egressRules() []string {
	var r []string
	switch {
	case df.permille >= 1000:
		r = append(r, "meta protocol { ip, ip6 } drop")
	case df.permille > 0:
		r = append(r, fmt.Sprintf("meta protocol { ip, ip6 } numgen random mod 1000 < %d drop", df.permille))
	}
	if df.de != nil && df.de.mode == modeEgress {
		r = append(r, fmt.Sprintf("meta mark != %#x meta protocol { ip, ip6 } fwd to %q", delayMark, df.de.capIf))
	}
	return r
}

func nft(ns, script string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft in %s: %w: %s\n%s", ns, err, bytes.TrimSpace(out), script)
	}
	return nil
}

func (f *Fabric) applyRules(df *dirFault) error {
	if err := nft(df.far.NS, nftScript(ingressTable(df.far.Ifname), "ingress", df.far.Ifname, df.ingressRules())); err != nil {
		return fmt.Errorf("lab: link %s from %s: %w", df.link.ID, df.near.Node, err)
	}
	if err := nft(df.near.NS, nftScript(egressTable(df.near.Ifname), "egress", df.near.Ifname, df.egressRules())); err != nil {
		return fmt.Errorf("lab: link %s from %s: %w", df.link.ID, df.near.Node, err)
	}
	return nil
}

// SetLoss drops pct percent (0..100, in steps of 0.1) of the IP packets
// leaving node from on link l. 0 removes the loss. The drop happens on the
// sending interface's netdev egress hook (before its TC egress), so it hits
// exactly that direction of that link, and the receiver, its TC hooks and
// any in-kernel reflector never see the packet.
func (f *Fabric) SetLoss(l Link, from string, pct float64) error {
	if math.IsNaN(pct) || pct < 0 || pct > 100 {
		return fmt.Errorf("lab: loss %v%%: want 0..100", pct)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	df, err := f.direction(l, from)
	if err != nil {
		return err
	}
	df.permille = int(math.Round(pct * 10))
	return f.applyRules(df)
}

// SetDown sets both ends of l administratively down (down=true) or up. The
// kernel then drops the routes through it (a multipath route loses that
// next hop); there is no routing protocol, so a spine that loses a leaf
// link black-holes (ICMP net unreachable) what other leaves still hash to
// it. Bringing the link up re-installs the routes. The uplinks of a
// dual-homed host are the exception: the routers' routes to it follow its
// links as a routing protocol would (reannounce).
func (f *Fabric) SetDown(l Link, down bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.direction(l, l.A.Node); err != nil {
		return err
	}
	state := "up"
	if down {
		state = "down"
	}
	for _, e := range []Endpoint{l.A, l.B} {
		if err := ipBatch(e.NS, fmt.Sprintf("link set dev %s %s\n", e.Ifname, state)); err != nil {
			return fmt.Errorf("lab: set %s %s: %w", l.ID, state, err)
		}
	}
	f.downed[l.ID] = down
	if !down {
		if err := f.reapplyRoutes(l.A.NS, l.B.NS); err != nil {
			return err
		}
	}
	if h, ok := f.topo.host(l.A.Node); ok && len(h.Leaves) > 0 {
		return f.reannounce(h)
	}
	return nil
}

// reannounce installs the routes to dual-homed host h that the leaves
// still wired to it (links not down) imply (topology.dualRoutes).
func (f *Fabric) reannounce(h Host) error {
	up := map[string]bool{}
	for _, l := range f.topo.Links {
		if l.A.Node == h.Name && !f.downed[l.ID] {
			up[l.B.Node] = true
		}
	}
	for ns, lines := range f.topo.dualRoutes(h, up) {
		cmd := exec.Command("ip", "-n", ns, "-force", "-batch", "-")
		cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
		_, _ = cmd.CombinedOutput() // "route del" of a route already gone fails harmlessly
	}
	return nil
}

// reapplyRoutes re-installs the planned routes of the namespaces. Routes
// through links that are still down fail and are skipped (-force).
func (f *Fabric) reapplyRoutes(nss ...string) error {
	for _, s := range f.topo.setups() {
		for _, ns := range nss {
			if s.NS != ns {
				continue
			}
			cmd := exec.Command("ip", "-n", ns, "-force", "-batch", "-")
			cmd.Stdin = strings.NewReader(strings.Join(s.Routes, "\n") + "\n")
			_, _ = cmd.CombinedOutput() // failures: next hops still down
		}
	}
	return nil
}

// ClearFaults removes loss and delay in both directions of l and sets it
// up if SetDown took it down.
func (f *Fabric) ClearFaults(l Link) error {
	f.mu.Lock()
	var errs []error
	for _, from := range []string{l.A.Node, l.B.Node} {
		df, err := f.direction(l, from)
		if err != nil {
			f.mu.Unlock()
			return err
		}
		df.permille = 0
		df.delay = 0
		old := df.de
		df.de = nil
		if err := f.applyRules(df); err != nil {
			errs = append(errs, err)
		}
		if old != nil {
			old.close()
		}
	}
	// An attached fabric (CLI) does not know what an earlier process did.
	wasDown := f.downed[l.ID] || !f.owned
	f.mu.Unlock()
	if wasDown {
		if err := f.SetDown(l, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
