package localize

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestRunNumberedMatchesRun: the same routes given as numbers into a names
// table (shuffled, with unused entries, every route's Hops dropped) rank
// exactly as Run ranks them by name, with loss, delay and a delayed
// fault in the mix.
func TestRunNumberedMatchesRun(t *testing.T) {
	f := newFabric(4, 8, 4)
	for seed := uint64(0); seed < 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		w := &world{loss: f.noise(rng, 1e-4), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
		fl, _ := f.links()
		w.loss[fl[rng.IntN(len(fl))]] = 0.05
		w.delay[fl[rng.IntN(len(fl))]] = 500e-6
		in := f.generate(rng, w, defaultHazards)
		want := Run(in, Config{})

		// A names table with a gap before every name, in random order.
		var names []string
		num := map[string]int32{}
		for _, r := range in {
			for _, h := range r.Hops {
				if _, ok := num[h]; !ok {
					num[h] = -1
				}
			}
		}
		order := make([]string, 0, len(num))
		for h := range num {
			order = append(order, h)
		}
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, h := range order {
			names = append(names, "unused")
			num[h] = int32(len(names))
			names = append(names, h)
		}
		numbered := make([]Input, len(in))
		for i, r := range in {
			r.Nodes = make([]int32, len(r.Hops))
			for j, h := range r.Hops {
				r.Nodes[j] = num[h]
			}
			r.Hops = nil
			numbered[i] = r
		}
		got := RunNumbered(names, numbered, Config{})
		if len(got) == 0 || !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: RunNumbered differs from Run:\n got %+v\nwant %+v", seed, got[:min(3, len(got))], want[:min(3, len(want))])
		}
	}
}
