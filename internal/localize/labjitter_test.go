package localize

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// labJitterFile holds the RTT jitter the lab measured per time source
// (written by internal/probe's BenchmarkRTTError with DNMS_WRITE_JITTER).
const labJitterFile = "testdata/lab_jitter.json"

type labJitter struct {
	Recorded string               `json:"recorded"`
	Sources  map[string][]float64 `json:"sources"`
}

// labSources returns the ebpf, kernel and user sources with the lab's
// measured jitter.
func labSources(tb testing.TB) ([]timeSource, string) {
	tb.Helper()
	b, err := os.ReadFile(labJitterFile)
	if err != nil {
		tb.Fatal(err)
	}
	var j labJitter
	if err := json.Unmarshal(b, &j); err != nil {
		tb.Fatalf("%s: %v", labJitterFile, err)
	}
	var out []timeSource
	for _, name := range []string{"ebpf", "kernel", "user"} {
		q := j.Sources[name]
		if len(q) != 101 {
			tb.Fatalf("%s: source %s has %d quantiles, want 101", labJitterFile, name, len(q))
		}
		out = append(out, timeSource{name: name, jitter: q})
	}
	return out, j.Recorded
}

// drawQuantile draws from the distribution the quantiles describe,
// interpolating linearly between them.
func drawQuantile(rng *rand.Rand, q []float64) float64 {
	x := rng.Float64() * float64(len(q)-1)
	i := int(x)
	if i >= len(q)-1 {
		return q[len(q)-1]
	}
	return q[i] + (x-float64(i))*(q[i+1]-q[i])
}

// TestDrawQuantile: draws reproduce the quantiles they come from.
func TestDrawQuantile(t *testing.T) {
	q := make([]float64, 101)
	for i := range q {
		q[i] = float64(i * i) // a skewed distribution
	}
	rng := rand.New(rand.NewPCG(1, 2))
	below := 0
	const n = 100000
	for range n {
		if drawQuantile(rng, q) <= q[90] {
			below++
		}
	}
	if f := float64(below) / n; f < 0.89 || f > 0.91 {
		t.Fatalf("%.3f of draws at or below the 90th percentile, want 0.90", f)
	}
}

// BenchmarkSlowLinkLabJitter is issue 14's slow-link table with the RTT
// noise the lab measured (testdata/lab_jitter.json) instead of a model:
// for each time source, P@1 (the delayed link is the top row by estimated
// delay) over 20 trials on the 1,024-link fabric with every hazard, and
// the smallest delay found with P@1 ≥ 0.95. Run:
//
//	go test -run '^$' -bench SlowLinkLabJitter -benchtime 1x ./internal/localize
func BenchmarkSlowLinkLabJitter(b *testing.B) {
	srcs, recorded := labSources(b)
	f := bigFabric()
	delays := []float64{2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6}
	for i := 0; i < b.N; i++ {
		var t strings.Builder
		fmt.Fprintf(&t, "\ndelay on one link, RTT jitter measured in the lab (%s)\n", recorded)
		fmt.Fprintf(&t, "%-7s %9s %9s |", "source", "jitter50", "jitter99")
		for _, d := range delays {
			fmt.Fprintf(&t, " %6s", fmt.Sprintf("%.0fµs", d*1e6))
		}
		fmt.Fprintf(&t, " | smallest with P@1 ≥ 0.95\n")
		for _, src := range srcs {
			fmt.Fprintf(&t, "%-7s %8.1fµs %8.1fµs |", src.name, 1e6*src.jitter[50], 1e6*src.jitter[99])
			smallest := "none"
			for _, d := range delays {
				p1, _, _ := runDelayRow(f, src, d, 20)
				fmt.Fprintf(&t, " %6.2f", p1)
				if p1 >= 0.95 && smallest == "none" {
					smallest = fmt.Sprintf("%.0f µs", d*1e6)
				}
			}
			fmt.Fprintf(&t, " | %s\n", smallest)
		}
		b.Log(t.String())
	}
}
