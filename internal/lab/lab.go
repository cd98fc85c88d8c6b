package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = "/var/run/netns"

// Fabric is a built (or attached) leaf-spine fabric.
type Fabric struct {
	Config  Config
	Hosts   []Host
	Routers []Router
	Links   []Link

	topo *topology

	mu      sync.Mutex
	closed  bool
	procs   map[*exec.Cmd]struct{}
	faults  map[dirKey]*dirFault // per link direction
	downed  map[string]bool      // link ID → set down by SetDown
	owned   bool                 // Close deletes the namespaces
	closeMu sync.Mutex
}

// RequireRoot skips t unless the process runs as root (the lab needs
// CAP_SYS_ADMIN and CAP_NET_ADMIN to make namespaces).
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("root tier: skipped with -short (scripts/test.sh runs it in its second pass)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces (run the tests as root, as CI does)")
	}
}

// UniquePrefix returns a short namespace prefix unique to this test run
// ("l" and 6 hex digits), so that fabrics of tests running in parallel,
// in several packages, never collide.
func UniquePrefix(t testing.TB) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("lab: random prefix: %v", err)
	}
	return "l" + hex.EncodeToString(b[:])
}

// New builds a fabric for a test: it skips unless root, fails the test if
// the build fails, and deletes everything in t.Cleanup.
func New(t testing.TB, cfg Config) *Fabric {
	t.Helper()
	RequireRoot(t)
	if cfg.Prefix == "" {
		cfg.Prefix = UniquePrefix(t)
	}
	if reaped, err := ReapStale(); err != nil {
		t.Logf("lab: reaping fabrics of dead test processes: %v", err)
	} else if len(reaped) > 0 {
		t.Logf("lab: deleted fabrics left by dead test processes: %v", reaped)
	}
	if err := recordOwner(cfg.Prefix); err != nil {
		t.Fatal(err)
	}
	f, err := Build(cfg)
	if err != nil {
		forgetOwner(cfg.Prefix)
		t.Fatalf("lab: build %+v: %v", cfg, err)
	}
	track(f)
	t.Cleanup(func() {
		untrack(f)
		err := f.Close()
		forgetOwner(cfg.Prefix)
		if err != nil {
			t.Errorf("lab: close: %v", err)
		}
		if left, err := LeftoverNamespaces(cfg.Prefix); err != nil || len(left) > 0 {
			t.Errorf("lab: namespaces left after close: %v (err %v)", left, err)
		}
	})
	return f
}

func newFabric(topo *topology, owned bool) *Fabric {
	return &Fabric{
		Config:  topo.cfg,
		Hosts:   topo.Hosts,
		Routers: topo.Routers,
		Links:   topo.Links,
		topo:    topo,
		procs:   map[*exec.Cmd]struct{}{},
		faults:  map[dirKey]*dirFault{},
		downed:  map[string]bool{},
		owned:   owned,
	}
}

// Build creates the fabric's namespaces, veths, addresses, routes and
// sysctls. On error everything made so far is deleted.
func Build(cfg Config) (*Fabric, error) {
	topo, err := plan(cfg)
	if err != nil {
		return nil, err
	}
	if left, err := LeftoverNamespaces(cfg.Prefix); err != nil {
		return nil, err
	} else if len(left) > 0 {
		return nil, fmt.Errorf("lab: namespaces with prefix %q already exist (%s); remove them with `go run ./scripts/lab down -prefix %s`",
			cfg.Prefix, strings.Join(left, " "), cfg.Prefix)
	}
	f := newFabric(topo, true)
	if err := f.build(); err != nil {
		if cerr := f.Close(); cerr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, cerr)
		}
		return nil, err
	}
	return f, nil
}

// Attach returns a Fabric for namespaces built earlier with the same
// Config (by the CLI's `up`), without creating anything. Close on an
// attached fabric stops its processes and delay elements but leaves the
// namespaces; use Destroy for those.
func Attach(cfg Config) (*Fabric, error) {
	topo, err := plan(cfg)
	if err != nil {
		return nil, err
	}
	for _, ns := range topo.namespaces() {
		if _, err := os.Stat(netnsDir + "/" + ns); err != nil {
			return nil, fmt.Errorf("lab: attach %s: %w", ns, err)
		}
	}
	return newFabric(topo, false), nil
}

// Discover reads the Config of a fabric built earlier from the names of
// its namespaces ("<prefix>-spine<i>", "-leaf<j>", "-host<n>").
func Discover(prefix string) (Config, error) {
	names, err := LeftoverNamespaces(prefix)
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Prefix: prefix}
	var hosts int
	for _, n := range names {
		node := strings.TrimPrefix(n, prefix+"-")
		var i int
		switch {
		case scan(node, "spine%d", &i):
			cfg.Spines = max(cfg.Spines, i)
		case scan(node, "leaf%d", &i):
			cfg.Leaves = max(cfg.Leaves, i)
		case scan(node, "host%d", &i):
			hosts = max(hosts, i)
		case scan(node, "dual%d", &i):
			cfg.DualHomed = max(cfg.DualHomed, i)
		}
	}
	if cfg.Spines == 0 || cfg.Leaves == 0 || hosts == 0 || hosts%cfg.Leaves != 0 {
		return Config{}, fmt.Errorf("lab: no complete fabric with prefix %q (namespaces: %s)", prefix, strings.Join(names, " "))
	}
	cfg.HostsPerLeaf = hosts / cfg.Leaves
	return cfg, nil
}

func scan(s, format string, i *int) bool {
	var rest string
	n, _ := fmt.Sscanf(s+" x", format+" %s", i, &rest)
	return n == 2 && rest == "x"
}

func (f *Fabric) build() error {
	var b strings.Builder
	for _, ns := range f.topo.namespaces() {
		fmt.Fprintf(&b, "netns add %s\n", ns)
	}
	if err := ipBatch("", b.String()); err != nil {
		return fmt.Errorf("lab: create namespaces: %w", err)
	}
	b.Reset()
	for _, c := range f.topo.vethCommands() {
		b.WriteString(c + "\n")
	}
	if err := ipBatch("", b.String()); err != nil {
		return fmt.Errorf("lab: create veths: %w", err)
	}
	setups := f.topo.setups()
	errs := make([]error, len(setups))
	var wg sync.WaitGroup
	for i, s := range setups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.apply(s)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (f *Fabric) apply(s nsSetup) error {
	err := doNS(s.NS, func() error {
		for _, sc := range s.Sysctls {
			if err := os.WriteFile("/proc/sys/"+sc.Key, []byte(sc.Value), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", sc.Key, sc.Value, err)
			}
		}
		for _, ifn := range s.Ifaces {
			if err := disableOffloads(ifn); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("lab: set up %s: %w", s.NS, err)
	}
	if err := ipBatch(s.NS, strings.Join(s.Addrs, "\n")+"\n"+strings.Join(s.Routes, "\n")+"\n"); err != nil {
		return fmt.Errorf("lab: set up %s: %w", s.NS, err)
	}
	return nil
}

// ipBatch runs `ip [-n ns] -batch -` with the given commands.
func ipBatch(ns, cmds string) error {
	args := []string{}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	args = append(args, "-batch", "-")
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(cmds)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Ethtool legacy ioctls (linux/ethtool.h).
const (
	ethtoolSTXCSUM = 0x17
	ethtoolSTSO    = 0x1f
	ethtoolSGSO    = 0x24
)

// disableOffloads turns off tx checksum offload, TSO and GSO on ifname in
// the current namespace, so that every frame on the wire carries a full
// checksum and is at most MTU-sized: userspace (the delay element, captures)
// can then read and re-send it as is.
func disableOffloads(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	for _, cmd := range []uint32{ethtoolSTXCSUM, ethtoolSTSO, ethtoolSGSO} {
		val := struct{ cmd, data uint32 }{cmd, 0}
		var ifr [40]byte
		copy(ifr[:unix.IFNAMSIZ-1], ifname)
		*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(&val))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&val)
		if errno != 0 && errno != unix.EOPNOTSUPP {
			return fmt.Errorf("ethtool %#x off on %s: %w", cmd, ifname, errno)
		}
	}
	return nil
}

// Close stops every process and delay element, then deletes every
// namespace of the fabric (which deletes its veths). It is idempotent and
// safe to call from t.Cleanup after a failure.
func (f *Fabric) Close() error {
	f.closeMu.Lock()
	defer f.closeMu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	procs := make([]*exec.Cmd, 0, len(f.procs))
	for c := range f.procs {
		procs = append(procs, c)
	}
	faults := make([]*dirFault, 0, len(f.faults))
	for _, df := range f.faults {
		faults = append(faults, df)
	}
	f.mu.Unlock()

	var errs []error
	for _, c := range procs {
		if err := f.Stop(c); err != nil {
			errs = append(errs, err)
		}
	}
	for _, df := range faults {
		f.mu.Lock()
		de := df.de
		df.de = nil
		if de != nil && !f.owned {
			// Attached fabric: the namespaces stay, so the rules must go.
			if err := f.applyRules(df); err != nil {
				errs = append(errs, err)
			}
		}
		f.mu.Unlock()
		if de != nil {
			de.close()
		}
	}
	if f.owned {
		if err := Destroy(f.Config.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LeftoverNamespaces lists the named namespaces whose name starts with
// "<prefix>-" (every named namespace for prefix ""). Tests use it to prove
// teardown.
func LeftoverNamespaces(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		if prefix == "" || strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Destroy deletes every namespace named "<prefix>-*" (the CLI's `down`).
// Processes still running inside are not killed by this; Close kills the
// ones the Fabric started first.
func Destroy(prefix string) error {
	if prefix == "" {
		return errors.New("lab: destroy: empty prefix")
	}
	left, err := LeftoverNamespaces(prefix)
	if err != nil || len(left) == 0 {
		return err
	}
	var b strings.Builder
	for _, ns := range left {
		fmt.Fprintf(&b, "netns delete %s\n", ns)
	}
	// -force: keep deleting after a failure.
	cmd := exec.Command("ip", "-force", "-batch", "-")
	cmd.Stdin = strings.NewReader(b.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("lab: delete namespaces: %w: %s", err, bytes.TrimSpace(out))
	}
	if left, lerr := LeftoverNamespaces(prefix); lerr == nil && len(left) > 0 {
		return errors.Join(err, fmt.Errorf("lab: namespaces still present: %s", strings.Join(left, " ")))
	}
	return err
}

// Host returns the host called name (zero Host if there is none).
func (f *Fabric) Host(name string) Host {
	h, _ := f.topo.host(name)
	return h
}

// Router returns the router called name (zero Router if there is none).
func (f *Fabric) Router(name string) Router {
	r, _ := f.topo.router(name)
	return r
}

// LinkBetween returns the link between two nodes, in either order, e.g.
// ("leaf1", "spine2") or ("host1", "leaf1"). Zero Link if there is none.
func (f *Fabric) LinkBetween(a, b string) Link {
	for _, l := range f.Links {
		if (l.A.Node == a && l.B.Node == b) || (l.A.Node == b && l.B.Node == a) {
			return l
		}
	}
	return Link{}
}

// GroundTruth describes the fabric and every path between every ordered
// pair of hosts.
func (f *Fabric) GroundTruth() GroundTruth { return f.topo.groundTruth() }

func (f *Fabric) ns(nodeOrNS string) (string, error) {
	ns, ok := f.topo.nsOf(nodeOrNS)
	if !ok {
		return "", fmt.Errorf("lab: no node or namespace %q in fabric %s", nodeOrNS, f.Config.Prefix)
	}
	return ns, nil
}

// Exec runs a command inside a namespace (given by namespace name or node
// name) and returns its combined output.
func (f *Fabric) Exec(ns string, args ...string) ([]byte, error) {
	cmd, err := f.Command(ns, args...)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab: in %s: %s: %w: %s", ns, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Command returns an unstarted command that runs args inside a namespace
// (via `ip netns exec`) in its own process group. Set Stdout/Stderr/Env as
// needed, then StartCmd it so that Close kills it.
func (f *Fabric) Command(ns string, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, errors.New("lab: command: no arguments")
	}
	name, err := f.ns(ns)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

// StartCmd starts cmd (from Command) and tracks it: Stop or Close kills its
// process group and waits for it. Do not call cmd.Wait yourself.
func (f *Fabric) StartCmd(cmd *exec.Cmd) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("lab: start: fabric closed")
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	f.procs[cmd] = struct{}{}
	return nil
}

// Start runs a long-running command inside a namespace; its output is
// discarded (use Command+StartCmd to keep it). Close kills it.
func (f *Fabric) Start(ns string, args ...string) (*exec.Cmd, error) {
	cmd, err := f.Command(ns, args...)
	if err != nil {
		return nil, err
	}
	if err := f.StartCmd(cmd); err != nil {
		return nil, err
	}
	return cmd, nil
}

// Stop sends SIGTERM to the process group of a command started by Start or
// StartCmd, SIGKILL after 3 s, and waits for it. Stopping twice is a no-op.
// A non-zero exit caused by the signal is not an error.
func (f *Fabric) Stop(cmd *exec.Cmd) error {
	f.mu.Lock()
	_, ok := f.procs[cmd]
	delete(f.procs, cmd)
	f.mu.Unlock()
	if !ok || cmd.Process == nil {
		return nil
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("lab: process %d (%s) did not exit after SIGKILL", pgid, strings.Join(cmd.Args, " "))
		}
	}
	// Children that left the group are not ours to hunt; the namespace
	// deletion that follows strands nothing that matters.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// Do runs fn on a locked OS thread inside the namespace (namespace name or
// node name). Sockets fn opens stay in that namespace after Do returns;
// goroutines fn starts do not run in it.
func (f *Fabric) Do(ns string, fn func() error) error {
	name, err := f.ns(ns)
	if err != nil {
		return err
	}
	return doNS(name, fn)
}

func doNS(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(netnsDir + "/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: open netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it when this
			// goroutine exits, so no other goroutine runs in the wrong ns.
			errc <- errors.Join(ferr, fmt.Errorf("lab: leave netns %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
