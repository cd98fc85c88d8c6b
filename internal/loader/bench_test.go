package loader

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// BenchmarkPrograms reports the in-kernel cost per packet (BPF_PROG_TEST_RUN
// duration, syscall excluded) of each program on dnms and other packets:
//
//	go test -run '^$' -bench Programs ./internal/loader
func BenchmarkPrograms(b *testing.B) {
	objs, rd := testObjs(b, DefaultConfig())
	other := pingFrame(ping(1))
	other.dport = 53
	tcp := pingFrame(ping(1))
	tcp.proto = 6
	ack := ping(1)
	ack.Type = typeAck
	ackFrame := pkt{srcMAC: macB, dstMAC: macA, src: addrB, dst: addrA, ttl: 60, sport: 40001, dport: 33435,
		payload: ack.payload()}.bytes()
	trace := ping(1)
	trace.Type, trace.TTL, trace.PadLen = typeTrace, 3, 3
	icmp := icmpError(macR, router, pingFrame(trace).bytes(), 11, 0, 1000)
	syn := make([]byte, 20)
	syn[0], syn[1], syn[12], syn[13] = 0x9c, 0xa4, 5<<4, 0x02 // from port 40100
	synFrame := pkt{src: addrB, dst: addrA, ttl: 64, proto: 6, payload: syn}.bytes()
	if err := objs.TargetPorts.Put(bpfDnmsTargetKey{Proto: 6, Port: 40100}, uint8(1)); err != nil {
		b.Fatal(err)
	}

	// The test-run loop's own cost: a program that returns TC_ACT_OK.
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "MIT",
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { empty.Close() })

	for _, bc := range []struct {
		name   string
		prog   *ebpf.Program
		in     []byte
		repeat int // >1 only for packets the program does not rewrite
		// targets: a target flow is watched (targets_on), so TCP, UDP
		// and ICMP packets cost a target_ports lookup
		targets bool
	}{
		{"baseline/empty-program", empty, other.bytes(), 1000, false},
		{"egress/other-udp", objs.DnmsEgress, other.bytes(), 1000, false},
		{"egress/tcp", objs.DnmsEgress, tcp.bytes(), 1000, false},
		{"egress/ping-stamp", objs.DnmsEgress, pingFrame(ping(1)).bytes(), 1000, false},
		{"ingress/other-udp", objs.DnmsIngress, other.bytes(), 1000, false},
		{"ingress/tcp", objs.DnmsIngress, tcp.bytes(), 1000, false},
		{"ingress/ack-stamp", objs.DnmsIngress, ackFrame, 1000, false},
		{"egress/other-udp-targets-on", objs.DnmsEgress, other.bytes(), 1000, true},
		{"egress/tcp-targets-on", objs.DnmsEgress, tcp.bytes(), 1000, true},
		{"ingress/tcp-targets-on", objs.DnmsIngress, tcp.bytes(), 1000, true},
		{"egress/target-syn-stamp", objs.DnmsEgress, synFrame, 1000, true},
		{"ingress/icmp-stamp", objs.DnmsIngress, icmp, 1000, false},
		// The reflector rewrites the packet in place: one run per call.
		{"ingress/ping-reflect", objs.DnmsIngress, pingFrame(ping(1)).bytes(), 1, false},
		// The same one run per call, for comparison with the reflector.
		{"baseline/empty-program-1", empty, other.bytes(), 1, false},
		{"ingress/other-udp-1", objs.DnmsIngress, other.bytes(), 1, false},
		{"ingress/ack-stamp-1", objs.DnmsIngress, ackFrame, 1, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			on := uint32(0)
			if bc.targets {
				on = 1
			}
			if err := objs.TargetsOn.Set(on); err != nil {
				b.Fatal(err)
			}
			// In fibNS: the reflector looks the ack's route up there.
			defer enterFibNS(b)()
			var total time.Duration
			var runs int
			for b.Loop() {
				_, d, err := bc.prog.Benchmark(bc.in, bc.repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += d * time.Duration(bc.repeat)
				runs += bc.repeat
				readStamps(b, rd) // drain so that reserve never fails
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(runs), "ns/packet")
		})
	}
}
