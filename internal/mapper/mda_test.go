package mapper

import (
	"fmt"
	"math"
	"testing"
)

func TestFlowsNeeded(t *testing.T) {
	// Augustin et al., "Multipath tracing with Paris traceroute" (E2EMON
	// 2007), Table 1, 95% confidence; the rest from the same formula.
	want95 := []int{6, 11, 16, 21, 27, 33, 38, 44, 51, 57, 63, 70, 76, 83, 90, 96}
	for i, want := range want95 {
		k := i + 1
		if got := FlowsNeeded(k, 0.95); got != want {
			t.Errorf("FlowsNeeded(%d, 0.95) = %d, want %d", k, got, want)
		}
	}
	tests := []struct {
		k    int
		conf float64
		want int
	}{
		{0, 0.95, 6}, // nothing seen yet counts as one next hop
		{-3, 0.95, 6},
		{1, 0.99, 8}, // 2*(1/2)^n <= 0.01
		{1, 0.50, 2}, // 2*(1/2)^n <= 0.5
		{1, 1, maxFlows},
		{1, 0, maxFlows},
	}
	for _, tt := range tests {
		if got := FlowsNeeded(tt.k, tt.conf); got != tt.want {
			t.Errorf("FlowsNeeded(%d, %v) = %d, want %d", tt.k, tt.conf, got, tt.want)
		}
	}
}

// FlowsNeeded must be the first n where the inclusion-exclusion miss
// probability drops to alpha.
func TestFlowsNeededMatchesInclusionExclusion(t *testing.T) {
	incl := func(m, n int) float64 {
		p := 0.0
		binom := 1.0
		for i := 1; i <= m; i++ {
			binom = binom * float64(m-i+1) / float64(i)
			term := binom * math.Pow(float64(m-i)/float64(m), float64(n))
			if i%2 == 1 {
				p += term
			} else {
				p -= term
			}
		}
		return p
	}
	for k := 1; k <= 10; k++ {
		n := FlowsNeeded(k, 0.95)
		if p := incl(k+1, n); p > 0.05+1e-9 {
			t.Errorf("k=%d: miss(%d) = %v > 0.05", k, n, p)
		}
		if p := incl(k+1, n-1); p <= 0.05 {
			t.Errorf("k=%d: miss(%d) = %v already <= 0.05", k, n-1, p)
		}
		if d := math.Abs(missProbability(k+1, n) - incl(k+1, n)); d > 1e-9 {
			t.Errorf("k=%d: missProbability differs from inclusion-exclusion by %v", k, d)
		}
	}
}

// leafSpine returns n flows' routes through a 2-leaf fabric with the given
// spines, flow i taking spine spineOf(i).
func leafSpine(n int, spineOf func(i int) int) [][]string {
	routes := make([][]string, n)
	for i := range routes {
		routes[i] = []string{"198.18.1.10", "198.18.0.1", fmt.Sprintf("198.18.0.%d", 100+spineOf(i)), "198.18.0.2", "198.18.2.10"}
	}
	return routes
}

func TestCoverage(t *testing.T) {
	tests := []struct {
		name          string
		routes        [][]string
		wantRoutes    int
		wantConfident bool
		wantNeeded    int // 0: don't check
	}{
		{name: "none", routes: nil, wantRoutes: 0, wantConfident: false},
		{
			// One path, 11 flows: every vertex has one next hop and 11 >= 6.
			name: "1 path 11 ports", routes: leafSpine(11, func(int) int { return 0 }),
			wantRoutes: 1, wantConfident: true, wantNeeded: 6,
		},
		{
			name: "1 path 5 ports", routes: leafSpine(5, func(int) int { return 0 }),
			wantRoutes: 1, wantConfident: false, wantNeeded: 6,
		},
		{
			// 4 spines, 11 flows: the leaf saw 4 next hops and needs 21
			// flows to rule out a fifth; each spine got 2-3 flows and needs 6
			// to rule out a second next hop. The honest MDA answer is no.
			name: "4 paths 11 ports", routes: leafSpine(11, func(i int) int { return i % 4 }),
			wantRoutes: 4, wantConfident: false, wantNeeded: 6 * 11 / 2, // spine with 2 of 11 flows
		},
		{
			// 4 spines, 24 flows, 6 each: leaf 24 >= 21, spines 6 >= 6.
			name: "4 paths 24 ports", routes: leafSpine(24, func(i int) int { return i % 4 }),
			wantRoutes: 4, wantConfident: true, wantNeeded: 24,
		},
		{
			name: "2 paths 2 ports", routes: leafSpine(2, func(i int) int { return i }),
			wantRoutes: 2, wantConfident: false,
		},
		{
			// Two flows over 4 spines can show at most 2 paths.
			name: "4 spines 2 ports", routes: leafSpine(2, func(i int) int { return i * 2 }),
			wantRoutes: 2, wantConfident: false,
		},
		{
			// A silent spine is one vertex shared by every flow through it.
			name: "silent spine", routes: func() [][]string {
				r := leafSpine(24, func(i int) int { return i % 4 })
				for i := range r {
					if i%4 == 1 {
						r[i][2] = silentAddr
					}
				}
				return r
			}(),
			wantRoutes: 4, wantConfident: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := coverage(tt.routes, 0.95)
			if c.Routes != tt.wantRoutes || c.Confident != tt.wantConfident || c.FlowsUsed != len(tt.routes) {
				t.Errorf("routes=%d confident=%v used=%d, want %d %v %d\n%+v",
					c.Routes, c.Confident, c.FlowsUsed, tt.wantRoutes, tt.wantConfident, len(tt.routes), c)
			}
			if tt.wantNeeded != 0 && c.FlowsNeeded != tt.wantNeeded {
				t.Errorf("FlowsNeeded = %d, want %d", c.FlowsNeeded, tt.wantNeeded)
			}
			if !tt.wantConfident && len(tt.routes) > 0 && c.MissProbability <= 0.05 {
				t.Errorf("not confident but MissProbability %v <= 0.05", c.MissProbability)
			}
		})
	}
}

func TestCoverageBranching(t *testing.T) {
	c := coverage(leafSpine(11, func(i int) int { return i % 4 }), 0.95)
	var leaf *HopBranching
	for i := range c.Hops {
		if c.Hops[i].Position == 1 {
			leaf = &c.Hops[i]
		}
	}
	if leaf == nil {
		t.Fatalf("no vertex at position 1 in %+v", c.Hops)
	}
	if leaf.Addr != "198.18.0.1" || leaf.Flows != 11 || len(leaf.NextHops) != 4 || leaf.FlowsNeeded != 21 || leaf.Confident {
		t.Errorf("leaf vertex = %+v, want 198.18.0.1 with 11 flows, 4 next hops, 21 needed, not confident", *leaf)
	}
	// 11 flows over 5 equally likely next hops miss one ~39% of the time.
	if math.Abs(leaf.MissProbability-0.3936) > 0.001 {
		t.Errorf("leaf MissProbability = %v, want ~0.394", leaf.MissProbability)
	}
	if got := len(c.Hops); got != 1+1+4+1 {
		t.Errorf("%d vertices, want 7 (host, leaf, 4 spines, leaf)", got)
	}
}

func TestRouteKeyString(t *testing.T) {
	a := routeKeyString([]string{"1.1.1.1", "2.2.2.2"})
	b := routeKeyString([]string{"1.1.1.12.2.2.2"})
	if a == b {
		t.Errorf("separator missing: %q", a)
	}
}

// Coverage runs on every stored trace and for every peer on each
// /v1/mapper/peers request.
func BenchmarkCoverage(b *testing.B) {
	for _, ports := range []int{11, 64} {
		routes := leafSpine(ports, func(i int) int { return i % 4 })
		b.Run(fmt.Sprintf("ports=%d", ports), func(b *testing.B) {
			for b.Loop() {
				coverage(routes, 0.95)
			}
		})
	}
}

func BenchmarkFlowsNeeded(b *testing.B) {
	for b.Loop() {
		FlowsNeeded(16, 0.95)
	}
}
