package probe

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// Test helpers for the external test package (probe_test), which exists to
// import internal/loader (which imports probe).

type LabPair = labPair
type Capture = capture

func NewLabPair(t testing.TB, mod func(c *Config)) *LabPair { return newLabPair(t, mod) }
func (lp *labPair) Fabric() *lab.Fabric                     { return lp.f }
func (lp *labPair) Engines() (a, b *Engine)                 { return lp.a, lp.b }
func (lp *labPair) Truth(t testing.TB) [][]netip.Addr       { return lp.truth(t) }
func (lp *labPair) TraceTruth(t testing.TB, port uint16, truth [][]netip.Addr) TraceResult {
	return lp.traceTruth(t, port, truth)
}
func (lp *labPair) PingMany(t testing.TB, n int, spacing time.Duration) []Result {
	return lp.pingMany(t, n, spacing)
}
func StartCapture(t testing.TB, f *lab.Fabric, h lab.Host) *Capture { return startCapture(t, f, h) }
func StartRouterCapture(t testing.TB, f *lab.Fabric, h lab.Host) *Capture {
	return startRouterCapture(t, f, h)
}
func RTTErrors(c *Capture, rs []Result) []time.Duration { return rttErrors(c, rs) }
func HopRTTErrors(c *Capture, peer netip.Addr, port uint16, hops []graph.Hop) []time.Duration {
	return hopRTTErrors(c, peer, port, hops)
}
func Pct(v []time.Duration, p float64) time.Duration { return pct(v, p) }
func UserspacePings(e *Engine) float64               { return testutil.ToFloat64(e.met.userspacePings) }
func (e *Engine) PingPort() uint16                   { return e.cfg.PingPort }
func (e *Engine) SrcPorts() (lo, hi uint16)          { return e.cfg.SrcPortStart, e.cfg.SrcPortEnd }

func ReflectMismatches(c *Capture, kernel bool) (int, string) { return reflectMismatches(c, kernel) }

func CheckDelayRise(t *testing.T, lp *LabPair) { checkDelayRise(t, lp, 0, 200*time.Microsecond) }
