package localize

import (
	"math/rand/v2"
	"reflect"
	"slices"
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

// reversesByMap is reverses as it was: a map of each pair's routes in
// input order.
func reversesByMap(in []Input, ix *index) (keyOff, rev []int32) {
	pair := func(s, d int32) uint64 { return uint64(uint32(s))<<32 | uint64(uint32(d)) }
	byPair := make(map[uint64][]int32)
	for p, r := range in {
		if r.hopCount() >= 2 {
			s, d := ix.ends(p)
			byPair[pair(s, d)] = append(byPair[pair(s, d)], int32(p))
		}
	}
	keyOff = make([]int32, len(in)+1)
	for p, r := range in {
		keyOff[p] = int32(len(rev))
		var back []int32
		if r.hopCount() >= 2 {
			s, d := ix.ends(p)
			back = byPair[pair(d, s)]
		}
		for _, port := range r.Ports {
			rev = append(rev, withPort(in, back, port))
		}
	}
	keyOff[len(in)] = int32(len(rev))
	return keyOff, rev
}

// TestReversesMatchesMap: the sorted search finds the same reverse route
// for every key as the map did, including keys on two routes of a pair
// (the first in input order wins) and routes without a reverse.
func TestReversesMatchesMap(t *testing.T) {
	f := newFabric(4, 8, 4)
	for seed := uint64(0); seed < 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 11))
		w := &world{loss: f.noise(rng, 1e-4), routerLoss: map[string]float64{}, delay: map[link]float64{}, source: srcEBPF}
		hz := defaultHazards
		hz.missingRoute = 0.2
		in := f.generate(rng, w, hz)
		// Duplicate a few routes: the same pair and ports twice.
		for i := 0; i < 5 && len(in) > 0; i++ {
			in = append(in, in[rng.IntN(len(in))])
		}
		rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
		ix := indexLinks(in, nil)
		gotOff, got := reverses(in, ix)
		wantOff, want := reversesByMap(in, ix)
		if !reflect.DeepEqual(gotOff, wantOff) || !slices.Equal(got, want) {
			t.Fatalf("seed %d: reverses differ from the map's", seed)
		}
		if !slices.ContainsFunc(got, func(q int32) bool { return q >= 0 }) || !slices.Contains(got, -1) {
			t.Fatalf("seed %d: want both found and missing reverses in the fixture", seed)
		}
	}
}
