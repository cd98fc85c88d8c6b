package probe

import (
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPingRate measures how many pings per second one process can
// send, reflect (userspace reflector), stamp and match on loopback: engine A
// on 127.0.0.2 pings engine B on 127.0.0.3 with up to 512 pings
// outstanding. Both engines run in this process, so cpu-µs/probe counts
// the prober and the reflector together; probes/core-s is the rate one
// core would sustain at that cost.
//
//	go test -run '^$' -bench PingRate -benchtime 200000x ./internal/probe/
func BenchmarkPingRate(b *testing.B) {
	for _, src := range []Source{SourceUser, SourceKernel} {
		b.Run(string(src), func(b *testing.B) {
			a, r := startPairB(b, src)
			peer := r.LocalAddr()
			ports := int(a.cfg.SrcPortEnd-a.cfg.SrcPortStart) + 1
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			start := time.Now()
			outstanding, got, lost := 0, 0, 0
			b.ResetTimer()
			for i := 0; got < b.N; {
				for outstanding < 512 && i < b.N {
					a.Ping(peer, a.cfg.SrcPortStart+uint16(i%ports))
					i++
					outstanding++
				}
				res := <-a.Results()
				outstanding--
				got++
				if res.Lost {
					lost++
				}
			drain:
				for got < b.N {
					select {
					case res := <-a.Results():
						outstanding--
						got++
						if res.Lost {
							lost++
						}
					default:
						break drain
					}
				}
			}
			el := time.Since(start)
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(b.N)/el.Seconds(), "probes/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/probe")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "probes/core-s")
			b.ReportMetric(float64(ru1.Maxrss)/1024, "maxRSS-MiB")
			b.ReportMetric(float64(lost)/float64(b.N), "lost-ratio")
		})
	}
}

func startPairB(b *testing.B, src Source) (a, r testEngine) {
	b.Helper()
	var err error
	mk := func(addr string, ping, s, e uint16) (testEngine, error) {
		c := DefaultConfig()
		c.LocalAddr = netip.MustParseAddr(addr)
		c.PingPort, c.SrcPortStart, c.SrcPortEnd = ping, s, e
		c.Timestamps = string(src)
		en, err := New(c)
		return testEngine{Engine: en}, err
	}
	for try := 0; try < 10; try++ {
		ping, s, e := testPorts()
		if a, err = mk("127.0.0.2", ping, s, e); err != nil {
			continue
		}
		if r, err = mk("127.0.0.3", ping, s, e); err != nil {
			a.Close()
			continue
		}
		break
	}
	if err != nil {
		b.Fatal(err)
	}
	go a.Run(b.Context())
	go r.Run(b.Context())
	b.Cleanup(func() { a.Close(); r.Close() })
	return a, r
}
