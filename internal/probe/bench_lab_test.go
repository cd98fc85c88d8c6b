package probe_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/probe"
)

// BenchmarkRTTError prints, for each time source, idle and with
// `stress-ng --cpu 2` running, the absolute difference of every ping's RTT
// from two references (matched by flow and seq): p50, p99 and max over 500
// pings on a 2-spine, 2-leaf lab fabric. Root only; it is a table, not a
// pass/fail test.
//
//   - same-if: an AF_PACKET capture on the prober's own interface. It reads
//     the same skb stamp path as the kernel source and sits next to the eBPF
//     hooks: it sees the prober's userspace and syscall time (the user
//     source's error) but not an error in the stamp itself.
//
//   - router: a capture on the leaf's end of the prober's veth, in the
//     leaf's namespace, with the leaf's own receive (ping) and transmit
//     (ack) stamps. It is independent of every stamp on the host; the
//     difference also holds the veth crossing both ways (a few µs of real
//     path the router cannot see), so it bounds the error from above.
//
//     go test -run '^$' -bench RTTError -benchtime 1x ./internal/probe/
//
// With DNMS_WRITE_JITTER=FILE it also writes, per source, the idle RTT
// jitter (each ping's RTT minus the smallest RTT of its flow) as 101
// quantiles: internal/localize's slow-link benchmark draws its per-sample
// RTT noise from that file (internal/localize/testdata/lab_jitter.json).
func BenchmarkRTTError(b *testing.B) {
	lab.RequireRoot(b)
	type row struct {
		load, src, ref string
		n              int
		p50, p99, max  time.Duration
	}
	var rows []row
	jitter := labJitter{Sources: map[string][]float64{},
		Recorded: time.Now().UTC().Format(time.DateOnly) + ": DNMS_WRITE_JITTER=FILE go test -run '^$' -bench RTTError -benchtime 1x ./internal/probe (idle rows, 500 pings, 2-spine 2-leaf lab: 4 links each way)"}
	for _, load := range []string{"idle", "stress-ng --cpu 2"} {
		if load != "idle" {
			cmd := exec.Command("stress-ng", "--cpu", "2", "--timeout", "120s", "--quiet")
			if err := cmd.Start(); err != nil {
				b.Logf("stress-ng: %v (skipping the loaded rows)", err)
				break
			}
			stop := func() {
				if cmd.Process != nil {
					cmd.Process.Kill()
					cmd.Wait()
				}
			}
			b.Cleanup(stop)
			defer stop()
			time.Sleep(time.Second) // let the load ramp up before measuring
		}
		for _, src := range []probe.Source{probe.SourceUser, probe.SourceKernel, probe.SourceEBPF} {
			ebpf := src == probe.SourceEBPF
			lp := probe.NewLabPair(b, func(c *probe.Config) {
				c.Timestamps = string(src)
				c.EBPF = ebpf
				c.Reflect = !ebpf
			})
			if ebpf {
				a, r := lp.Engines()
				attachLoader(b, lp, "host1", false, a.HandleStamp)
				attachLoader(b, lp, "host2", true, r.HandleStamp)
			}
			h := lp.Fabric().Host("host1")
			refs := []struct {
				name string
				c    *probe.Capture
			}{
				{"same-if", probe.StartCapture(b, lp.Fabric(), h)},
				{"router", probe.StartRouterCapture(b, lp.Fabric(), h)},
			}
			rs := lp.PingMany(b, 500, 2*time.Millisecond)
			if load == "idle" {
				jitter.Sources[string(src)] = jitterQuantiles(rs)
			}
			for _, ref := range refs {
				errs := probe.RTTErrors(ref.c, rs)
				if len(errs) == 0 {
					b.Fatalf("%s/%s/%s: nothing matched", load, src, ref.name)
				}
				rows = append(rows, row{load, string(src), ref.name, len(errs), probe.Pct(errs, .5), probe.Pct(errs, .99), errs[len(errs)-1]})
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-18s %-7s %-8s %5s %10s %10s %10s\n", "load", "source", "ref", "n", "p50", "p99", "max")
	for _, r := range rows {
		fmt.Fprintf(&sb, "%-18s %-7s %-8s %5d %10v %10v %10v\n", r.load, r.src, r.ref, r.n, r.p50, r.p99, r.max)
	}
	fmt.Fprint(os.Stdout, sb.String())
	if path := os.Getenv("DNMS_WRITE_JITTER"); path != "" {
		buf, err := json.MarshalIndent(jitter, "", "  ")
		if err == nil {
			err = os.WriteFile(path, append(buf, '\n'), 0o644)
		}
		if err != nil {
			b.Fatalf("DNMS_WRITE_JITTER: %v", err)
		}
	}
}

// labJitter is the file DNMS_WRITE_JITTER writes: per time source, 101
// quantiles (0, 1, ..., 100%) of RTT jitter in seconds.
type labJitter struct {
	Recorded string               `json:"recorded"`
	Sources  map[string][]float64 `json:"sources"`
}

// jitterQuantiles is the distribution of each answered ping's RTT minus
// the smallest RTT of its flow (source port).
func jitterQuantiles(rs []probe.Result) []float64 {
	low := map[uint16]time.Duration{}
	for _, r := range rs {
		if m, ok := low[r.SrcPort]; !r.Lost && (!ok || r.RTT < m) {
			low[r.SrcPort] = r.RTT
		}
	}
	var js []float64
	for _, r := range rs {
		if !r.Lost {
			js = append(js, (r.RTT - low[r.SrcPort]).Seconds())
		}
	}
	if len(js) == 0 {
		return nil
	}
	slices.Sort(js)
	q := make([]float64, 101)
	for i := range q {
		q[i] = js[min(len(js)-1, i*(len(js)-1)/100)]
	}
	return q
}
