// Package lab builds leaf-spine fabrics of Linux routers in network
// namespaces for dnms's root-only tests, the demo and benchmarks, injects
// faults (loss, delay, link down) per link and direction, and reports ground
// truth. It owns all namespace handling: other packages' tests call it.
//
// Contract used by other packages' tests (implemented in this package):
//
//	func RequireRoot(t testing.TB)               // t.Skip with a clear message unless root
//	type Config struct{ Prefix string; Spines, Leaves, HostsPerLeaf int }
//	func New(t testing.TB, cfg Config) *Fabric  // RequireRoot, Build, t.Cleanup(Close)
//	func Build(cfg Config) (*Fabric, error)
//	func (f *Fabric) Close() error              // deletes every namespace it made
//	f.Hosts []Host   // Host{Name, NS string; Addr netip.Addr; Ifname string; Leaf string}
//	f.Routers []Router // Router{Name, NS string; Loopback netip.Addr; Role "spine"|"leaf"}
//	f.Links []Link   // Link{ID string; A, B Endpoint{Node, NS, Ifname string; Addr netip.Addr}}
//	func (f *Fabric) Host(name string) Host
//	func (f *Fabric) LinkBetween(a, b string) Link // by node name, e.g. ("leaf1","spine2")
//	func (f *Fabric) Exec(ns string, args ...string) ([]byte, error) // run a command in ns
//	func (f *Fabric) Start(ns string, args ...string) (*exec.Cmd, error) // long-running, killed on Close
//	func (f *Fabric) Do(ns string, fn func() error) error // run fn on a locked OS thread inside ns
//	func (f *Fabric) SetLoss(l Link, from string, pct float64) error // direction: traffic leaving node `from`
//	func (f *Fabric) SetDelay(l Link, from string, d time.Duration) error
//	func (f *Fabric) SetDown(l Link, down bool) error
//	func (f *Fabric) ClearFaults(l Link) error
//	func (f *Fabric) GroundTruth() GroundTruth  // JSON: routers, hosts, links, paths per ordered host pair
//
// Addresses come only from 198.18.0.0/15. Namespace names start with
// Config.Prefix, which tests make unique (e.g. lab.UniquePrefix(t)).
package lab
