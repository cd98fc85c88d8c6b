package localize

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMedian: the selection gives what sorting gives (v[len/2] of the
// sorted values), with many ties, and leaves its argument as it was.
func TestMedian(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for n := 1; n < 300; n++ {
		for trial := range 20 {
			v := make([]float64, n)
			for i := range v {
				v[i] = float64(rng.IntN(2+trial*5)) * 1e-6
			}
			in := slices.Clone(v)
			s := slices.Clone(v)
			slices.Sort(s)
			if got := median(v); got != s[n/2] {
				t.Fatalf("n %d trial %d: median %v, want %v", n, trial, got, s[n/2])
			}
			if !slices.Equal(v, in) {
				t.Fatalf("n %d: median changed its argument", n)
			}
		}
	}
}
