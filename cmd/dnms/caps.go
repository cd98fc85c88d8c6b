package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dnms runs unprivileged with two capabilities: CAP_BPF to load the eBPF
// programs and use their maps, CAP_NET_ADMIN to attach them to interfaces
// (now and when links and routes change) and to turn on lo forwarding for
// the kernel reflector's route lookups. Nothing else: sockets are plain UDP
// and TCP (ICMP errors arrive through IP_RECVERR, no raw socket), and the
// verifier accepts the programs without CAP_PERFMON. Without CAP_BPF or
// CAP_NET_ADMIN the eBPF time source is unavailable and dnms falls back to
// kernel timestamps, saying so once. After start it drops every other
// capability it holds (root's included) from its effective, permitted,
// inheritable, ambient and bounding sets.

// capability is one Linux capability, by number, with its name.
type capability struct {
	num  uintptr
	name string
}

var (
	capBPF            = capability{unix.CAP_BPF, "CAP_BPF"}
	capNetAdmin       = capability{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}
	capNetBindService = capability{unix.CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"}
	// capNetRaw: icmp and tcp targets (-targets) send from raw sockets,
	// opened per flow whenever the targets file adds one.
	capNetRaw = capability{unix.CAP_NET_RAW, "CAP_NET_RAW"}
)

// ebpfCaps are what the eBPF time source needs.
var ebpfCaps = []capability{capBPF, capNetAdmin}

// capSets are the process's capability sets from /proc/self/status.
type capSets struct{ eff, prm, inh, bnd, amb uint64 }

func readCaps() (capSets, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return capSets{}, err
	}
	defer f.Close()
	var c capSets
	fields := map[string]*uint64{"CapEff:": &c.eff, "CapPrm:": &c.prm, "CapInh:": &c.inh, "CapBnd:": &c.bnd, "CapAmb:": &c.amb}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 2 && fields[fs[0]] != nil {
			if *fields[fs[0]], err = strconv.ParseUint(fs[1], 16, 64); err != nil {
				return capSets{}, fmt.Errorf("%s %q: %w", fs[0], fs[1], err)
			}
		}
	}
	return c, sc.Err()
}

func (c capability) bit() uint64 { return 1 << c.num }

// missingCaps names the capabilities of want that the effective set lacks.
func missingCaps(eff uint64, want []capability) []string {
	var out []string
	for _, c := range want {
		if eff&c.bit() == 0 {
			out = append(out, c.name)
		}
	}
	return out
}

// keptCaps are the capabilities dnms keeps after start: the eBPF ones it
// holds, and CAP_NET_BIND_SERVICE if the API listens on a port below 1024
// (the listener opens after the drop).
func keptCaps(httpPort int) []capability {
	keep := append([]capability(nil), ebpfCaps...)
	if httpPort > 0 && httpPort < 1024 {
		keep = append(keep, capNetBindService)
	}
	return keep
}

// dropCapabilities removes every capability not in keep from all of the
// process's threads: the bounding set first (it needs CAP_SETPCAP, which
// goes next), then effective, permitted and inheritable; the ambient set
// follows (it is always a subset of permitted and inheritable). It reports
// what it dropped; a process with nothing to drop does nothing.
func dropCapabilities(keep []capability, log *slog.Logger) error {
	c, err := readCaps()
	if err != nil {
		return err
	}
	var mask uint64
	for _, k := range keep {
		mask |= k.bit()
	}
	if c.prm&^mask == 0 && c.bnd&^mask == 0 {
		return nil
	}
	if c.eff&(1<<unix.CAP_SETPCAP) != 0 {
		for n := uintptr(0); n < 64; n++ {
			if c.bnd&(1<<n) != 0 && mask&(1<<n) == 0 {
				if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, n, 0); e != 0 {
					return fmt.Errorf("drop capability %d from the bounding set: %w", n, e)
				}
			}
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	eff, prm, inh := c.eff&mask, c.prm&mask, c.inh&mask
	data[0] = unix.CapUserData{Effective: uint32(eff), Permitted: uint32(prm), Inheritable: uint32(inh)}
	data[1] = unix.CapUserData{Effective: uint32(eff >> 32), Permitted: uint32(prm >> 32), Inheritable: uint32(inh >> 32)}
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	var kept []string
	for _, k := range keep {
		if prm&k.bit() != 0 {
			kept = append(kept, k.name)
		}
	}
	log.Info("dropped every capability but the ones dnms needs", "kept", strings.Join(kept, ","))
	return nil
}
