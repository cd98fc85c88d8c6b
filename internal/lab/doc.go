// Package lab builds leaf-spine fabrics of Linux routers in network
// namespaces for dnms's root-only tests, the demo and benchmarks, injects
// faults (loss, delay, link down) per link and direction, and reports ground
// truth. It owns all namespace handling: other packages' tests call it.
//
// Contract used by other packages' tests (implemented in this package):
//
//	func RequireRoot(t testing.TB)               // t.Skip with a clear message unless root
//	func UniquePrefix(t testing.TB) string       // "l" + 6 hex digits
//	type Config struct{ Prefix string; Spines, Leaves, HostsPerLeaf, DualHomed int }
//	func DefaultConfig() Config                  // dlab, 2 spines, 3 leaves, 2 hosts per leaf
//	func New(t testing.TB, cfg Config) *Fabric  // RequireRoot, Build, t.Cleanup(Close + leftover check); empty Prefix → UniquePrefix
//	func Build(cfg Config) (*Fabric, error)
//	func Attach(cfg Config) (*Fabric, error)    // existing namespaces (CLI); Close leaves them
//	func Destroy(prefix string) error           // delete every "<prefix>-*" namespace
//	func LeftoverNamespaces(prefix string) ([]string, error)
//	func (f *Fabric) Close() error              // stops processes and delay elements, deletes every namespace it made; idempotent
//	f.Hosts []Host   // Host{Name, NS string; Addr netip.Addr; Ifname string; Leaf string; Leaves []string}
//	f.Routers []Router // Router{Name, NS string; Loopback netip.Addr; Role "spine"|"leaf"}
//	f.Links []Link   // Link{ID string; A, B Endpoint{Node, NS, Ifname string; Addr netip.Addr}}
//	func (f *Fabric) Host(name string) Host
//	func (f *Fabric) Router(name string) Router
//	func (f *Fabric) LinkBetween(a, b string) Link // by node name, either order, e.g. ("leaf1","spine2")
//	func (f *Fabric) Exec(ns string, args ...string) ([]byte, error) // run a command in ns
//	func (f *Fabric) Command(ns string, args ...string) (*exec.Cmd, error) // unstarted, own process group
//	func (f *Fabric) StartCmd(cmd *exec.Cmd) error // start a Command; Stop/Close kill and wait
//	func (f *Fabric) Start(ns string, args ...string) (*exec.Cmd, error) // long-running, output discarded, killed on Close
//	func (f *Fabric) Stop(cmd *exec.Cmd) error   // SIGTERM the group, SIGKILL after 3 s, wait
//	func (f *Fabric) Do(ns string, fn func() error) error // run fn on a locked OS thread inside ns
//	func (f *Fabric) SetLoss(l Link, from string, pct float64) error // direction: traffic leaving node `from`
//	func (f *Fabric) SetDelay(l Link, from string, d time.Duration) error
//	func (f *Fabric) SetDown(l Link, down bool) error
//	func (f *Fabric) ClearFaults(l Link) error
//	func (f *Fabric) DelayStats(l Link, from string) DelayStats
//	func (f *Fabric) GroundTruth() GroundTruth  // JSON: routers, hosts, links, paths per ordered host pair
//	func (f *Fabric) ProbeHop(host string, dst netip.Addr, sport, dport uint16, ttl int, timeout time.Duration) (netip.Addr, error)
//	func Discover(prefix string) (Config, error) // Config of existing "<prefix>-*" namespaces
//	func ReapStale() ([]string, error)           // delete fabrics of dead test processes (New does this)
//
// Every ns argument accepts a namespace name (Host.NS) or a node name
// ("host1", "leaf2", "spine1").
//
// Names: routers "spine<i>", "leaf<j>"; hosts "host<n>" numbered across
// leaves (host1..hostH on leaf1, ...). Namespace "<prefix>-<node>". A host's
// uplink is "eth0"; a router's interface is named after the node at the
// other end ("spine2", "host3").
//
// Addresses come only from 198.18.0.0/15:
//
//	spine i loopback   198.18.0.i/32
//	leaf j loopback    198.18.1.j/32
//	leaf–spine /31s    198.18.16.0/20
//	leaf j hosts       198.19.j.(9+n)/32, gateway 198.19.j.1 (on every host port of the leaf)
//	dual-homed host k  198.18.2.k/32 on lo; eth0 to leaf k, eth1 to leaf k+1 (wrapping),
//	                   unnumbered, ECMP default route over both (hash policy 1)
//
// Hosts have a /32 and a default route via their leaf, so even same-leaf
// traffic goes through the leaf (one hop, the leaf loopback). Every router
// sets `src <loopback>` on its routes and icmp_errors_use_inbound_ifaddr=0,
// so ICMP errors (time exceeded) come from its loopback: a router is one
// node to traceroute. Routers hash ECMP with fib_multipath_hash_policy=3,
// fields 0x0037 (addresses, protocol, ports) and a different seed each;
// ICMP rate limits and rp_filter are off everywhere; veths have tx checksum
// offload, TSO and GSO off and IPv6 disabled.
//
// # Faults
//
// A fault applies to one direction of a link: the traffic leaving node
// `from` on it. Only IP frames are affected, never ARP (a one-way fault
// would otherwise break the other direction when a neighbour entry
// expires).
//
//   - Loss: an nftables netdev table on the sending interface's egress
//     hook, `meta protocol { ip, ip6 } numgen random mod 1000 < N drop`
//     (plain drop at 100%). Steps of 0.1%. The packet is lost on the wire
//     as far as the receiver can tell: on a leaf→host link the host's TC
//     ingress (and the eBPF reflector there) never sees it.
//   - Delay: a userspace delay element (see delay.go). If the receiver is
//     a router, an AF_PACKET tap on its interface copies each frame and an
//     ingress rule drops the original; after the delay the copy is sent
//     from the sender's interface (PACKET_QDISC_BYPASS, source MAC
//     02:dd:1a:b0:00:01) so it arrives on the real interface. If the
//     receiver is a host, an egress rule on the sender (the leaf) diverts
//     frames (nft fwd) to a private veth pair the element reads; it sends
//     them back out with an skb mark the rule skips. A host therefore sees
//     each frame once, at its delayed time, on its own interface, and its
//     TC hooks are unaffected. UDP/TCP checksums are recomputed. The delay
//     is counted from the kernel receive stamp of the tap, and the element
//     runs on SCHED_FIFO threads. Measured on the shared 2-core CI machine
//     (load average ~8), 10 ms configured, ICMP echo through it: added
//     delay error p50 +0.16..0.18 ms, p99 +0.6..1.7 ms; never early
//     (BenchmarkDelayElement). The element lives in the process that set
//     it: it ends with Close (or the CLI's `fault -delay` process).
//   - Down: both veth ends administratively down. The kernel drops the
//     routes through the link (a multipath route loses that next hop);
//     there is no routing protocol, so a spine that lost a leaf link
//     answers net unreachable for what other leaves still hash to it.
//     Up (or ClearFaults) re-installs the routes.
//
// # Teardown
//
// New registers Close with t.Cleanup, deletes its fabrics on SIGINT,
// SIGTERM and SIGHUP, records its PID under /run/dnms-lab so that a later
// New deletes fabrics of test processes that were killed (go test
// -timeout), and fails the test if a namespace with its prefix survives.
// The CLI's `down -prefix P` deletes every "<P>-*" namespace.
package lab
