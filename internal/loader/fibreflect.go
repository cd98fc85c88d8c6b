package loader

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

// The kernel reflector sends each ack where bpf_fib_lookup says (bpf/dnms.c,
// ack_route), looking the route up as the stack does for locally generated
// packets: with lo as the input interface. bpf_fib_lookup refuses to look
// anything up for an input interface whose forwarding is off, so the
// reflector needs net.ipv{4,6}.conf.lo.forwarding=1. That switch only
// concerns packets that arrive on lo for another host, which never happens
// (lo receives only what this host sent to itself): it does not make the
// host a router.
var loForwarding = []string{
	"/proc/sys/net/ipv4/conf/lo/forwarding",
	"/proc/sys/net/ipv6/conf/lo/forwarding",
}

// enableLoForwarding turns forwarding on for lo in the calling thread's
// network namespace, and says so once. When it cannot, the kernel reflector
// passes every ping to the userspace reflector (dnms_ebpf_reflect_passed_total)
// and that is logged once too.
func enableLoForwarding(log *slog.Logger) {
	var changed []string
	for _, p := range loForwarding {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6 here
		}
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			continue
		}
		if err == nil {
			err = os.WriteFile(p, []byte("1\n"), 0)
		}
		if err != nil {
			log.Warn("ebpf loader: the kernel reflector needs forwarding on lo for its route lookups; pings are answered in userspace",
				"sysctl", sysctlName(p), "err", err)
			return
		}
		changed = append(changed, sysctlName(p))
	}
	if len(changed) > 0 {
		log.Info("ebpf loader: turned on forwarding on lo so that the kernel reflector can look routes up (lo never forwards anything)",
			"sysctls", strings.Join(changed, ","))
	}
}

func sysctlName(path string) string {
	return strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", ".") + "=1"
}
