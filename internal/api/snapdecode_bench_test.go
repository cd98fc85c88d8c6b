package api

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/graph"
)

// BenchmarkHealthDecode: `dnms health`'s reading of a saved graph, the
// encoding/json decoder it used before (snapdecode_json_test.go) against
// snapDecoder on the same bytes in the same run, as CPU time per op (GC
// included). "decode" is the document to checked estimator input
// (encoding/json + graph.Validate vs readHealthDoc); "health" adds the
// estimator. DNMS_BENCH_HEALTH_DOC=FILE reads FILE (scripts/bench.sh
// localize saves the 12k-link graph there); without it, a graph of 1,000
// peers × 8 ports. Run:
//
//	go test ./internal/api -run '^$' -bench HealthDecode -benchtime 1x
func BenchmarkHealthDecode(b *testing.B) {
	doc := healthBenchDoc(b)
	old := func(run bool) {
		var s graph.Snapshot
		if err := jsonDecodeSnapshot(json.NewDecoder(bytes.NewReader(doc)), &s); err != nil {
			b.Fatal(err)
		}
		if err := graph.Validate(s); err != nil {
			b.Fatal(err)
		}
		if run {
			graph.HealthOf(s)
		}
	}
	cur := func(run bool) {
		d, err := readHealthDoc(bytes.NewReader(doc))
		if err != nil || d.invalid != nil {
			b.Fatal(err, d.invalid)
		}
		if run {
			d.input.Run(graph.DefaultHealthConfig())
		}
	}
	for _, c := range []struct {
		name string
		run  bool
	}{{"decode", false}, {"health", true}} {
		b.Run(c.name, func(b *testing.B) {
			var tOld, tNew time.Duration
			for b.Loop() {
				tOld += cpuOf(func() { old(c.run) })
				tNew += cpuOf(func() { cur(c.run) })
			}
			b.ReportMetric(float64(tOld.Milliseconds())/float64(b.N), "json-cpu-ms/op")
			b.ReportMetric(float64(tNew.Milliseconds())/float64(b.N), "new-cpu-ms/op")
			b.ReportMetric(float64(tOld)/float64(max(tNew, 1)), "json/new")
			b.ReportMetric(float64(len(doc))/(1<<20), "MiB")
		})
	}
}

func healthBenchDoc(b *testing.B) []byte {
	if path := os.Getenv("DNMS_BENCH_HEALTH_DOC"); path != "" {
		doc, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		return doc
	}
	doc, err := json.Marshal(bigGraph(b, 1000, 8).Snapshot())
	if err != nil {
		b.Fatal(err)
	}
	return doc
}

// cpuOf is the process CPU time (all threads, GC included) f takes, after
// a collection that charges f none of the garbage made before it.
func cpuOf(f func()) time.Duration {
	runtime.GC()
	t0 := cpuTime()
	f()
	return cpuTime() - t0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
