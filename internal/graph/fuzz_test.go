package graph

import (
	"encoding/json"
	"testing"
)

// FuzzHealthOf feeds arbitrary documents to the offline health path
// (`dnms health -f`): it must reject or rank, never panic.
func FuzzHealthOf(f *testing.F) {
	g := New(DefaultConfig())
	g.SetRoute(kAB, hops(hA, r1, "*", hB))
	g.SetRoute(kAB.Reverse(), hops(hB, r2, hA))
	g.AddSample(kAB, Sample{Seq: 1, Lost: true, Dir: LossReverse})
	g.AddSample(kAB, Sample{Seq: 2, RTT: ms(1)})
	seed, _ := json.Marshal(g.Snapshot())
	f.Add(seed)
	f.Add([]byte(`{"nodes":[{"id":"a"},{"id":"b"}],"edges":[{"src":"a","dst":"b"}],"routes":[{"id":"x","hops":["a","b"],"metrics":{"samples":5,"lost":5,"lostForward":0,"lostReverse":0}}]}`))
	f.Add([]byte(`{"routes":[{"id":"x","hops":["a","a","a"],"keys":[{"src":"198.18.0.1","dst":"198.18.0.2","srcPort":1}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Snapshot
		if err := json.Unmarshal(b, &s); err != nil {
			return
		}
		rows, err := HealthOf(s)
		if err != nil {
			return
		}
		for _, r := range rows {
			if r.EstimatedLoss < 0 || r.EstimatedLoss > 1 || r.Verdict == "" {
				t.Fatalf("bad row %+v", r)
			}
		}
	})
}
