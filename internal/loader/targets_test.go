package loader

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/dnms/dnms/internal/probe"
)

// Target stamps on crafted packets (BPF_PROG_TEST_RUN): probes of watched
// flows are stamped at egress and their answers at ingress, nothing else
// is, and no packet changes.
func TestTargetStamps(t *testing.T) {
	objs, rd := testObjs(t, DefaultConfig())
	const (
		echoID  = 0x1111
		tcpPort = 40100
		udpPort = 40200
	)
	for _, k := range []bpfDnmsTargetKey{{Proto: 1, Port: echoID}, {Proto: 58, Port: echoID}, {Proto: 6, Port: tcpPort}, {Proto: 17, Port: udpPort}} {
		if err := objs.TargetPorts.Put(k, uint8(1)); err != nil {
			t.Fatal(err)
		}
	}
	echo := func(typ uint8, id, seq uint16) []byte {
		b := make([]byte, 24)
		b[0] = typ
		binary.BigEndian.PutUint16(b[4:], id)
		binary.BigEndian.PutUint16(b[6:], seq)
		return b
	}
	tcp := func(sport, dport uint16, seq, ack uint32, flags uint8) []byte {
		b := make([]byte, 20)
		binary.BigEndian.PutUint16(b[0:], sport)
		binary.BigEndian.PutUint16(b[2:], dport)
		binary.BigEndian.PutUint32(b[4:], seq)
		binary.BigEndian.PutUint32(b[8:], ack)
		b[12], b[13] = 5<<4, flags
		return b
	}
	dnmt := func(seq uint64) []byte {
		b := make([]byte, 16)
		binary.BigEndian.PutUint32(b, 0x444E4D54)
		binary.BigEndian.PutUint64(b[4:], seq)
		return b
	}
	udpProbe := pkt{src: addrB, dst: addrA, ttl: 64, sport: udpPort, dport: 53, payload: dnmt(5)}.bytes()
	udpProbe6 := pkt6{src: addrB6, dst: addrA6, hop: 64, sport: udpPort, dport: 53, payload: dnmt(6)}.bytes()
	const syn, ack, rst = 0x02, 0x10, 0x04
	cases := []struct {
		name    string
		egress  bool
		in      []byte
		want    probe.StampKind // 0: no stamp
		v6      bool
		proto   uint8
		port    uint16 // Local port
		seq     uint64
		offFlag bool // run with targets_on 0
	}{
		{name: "echo request, targets off", egress: true, offFlag: true,
			in: pkt{src: addrB, dst: addrA, ttl: 64, proto: 1, payload: echo(8, echoID, 7)}.bytes()},
		{name: "echo request", egress: true, want: probe.StampTargetTx, proto: 1, port: echoID, seq: 7,
			in: pkt{src: addrB, dst: addrA, ttl: 64, proto: 1, payload: echo(8, echoID, 7)}.bytes()},
		{name: "echo reply", want: probe.StampTargetRx, proto: 1, port: echoID, seq: 7,
			in: pkt{src: addrA, dst: addrB, ttl: 60, proto: 1, payload: echo(0, echoID, 7)}.bytes()},
		{name: "echo request, other id", egress: true,
			in: pkt{src: addrB, dst: addrA, ttl: 64, proto: 1, payload: echo(8, echoID+1, 7)}.bytes()},
		{name: "echo reply, other id",
			in: pkt{src: addrA, dst: addrB, ttl: 60, proto: 1, payload: echo(0, echoID+1, 7)}.bytes()},
		{name: "syn", egress: true, want: probe.StampTargetTx, proto: 6, port: tcpPort, seq: 1000,
			in: pkt{src: addrB, dst: addrA, ttl: 64, proto: 6, payload: tcp(tcpPort, 8080, 1000, 0, syn)}.bytes()},
		{name: "syn-ack", want: probe.StampTargetRx, proto: 6, port: tcpPort, seq: 1000,
			in: pkt{src: addrA, dst: addrB, ttl: 60, proto: 6, payload: tcp(8080, tcpPort, 77, 1001, syn|ack)}.bytes()},
		{name: "rst", want: probe.StampTargetRx, proto: 6, port: tcpPort, seq: 1000,
			in: pkt{src: addrA, dst: addrB, ttl: 60, proto: 6, payload: tcp(8080, tcpPort, 0, 1001, rst|ack)}.bytes()},
		{name: "our reset of the half-open connection", egress: true,
			in: pkt{src: addrB, dst: addrA, ttl: 64, proto: 6, payload: tcp(tcpPort, 8080, 1001, 0, rst)}.bytes()},
		{name: "syn from another port", egress: true,
			in: pkt{src: addrB, dst: addrA, ttl: 64, proto: 6, payload: tcp(tcpPort+1, 8080, 1000, 0, syn)}.bytes()},
		{name: "udp probe", egress: true, want: probe.StampTargetTx, proto: 17, port: udpPort, seq: 5, in: udpProbe},
		{name: "udp probe without DNMT", egress: true,
			in: pkt{src: addrB, dst: addrA, ttl: 64, sport: udpPort, dport: 53, payload: make([]byte, 16)}.bytes()},
		{name: "udp answer", want: probe.StampTargetRx, proto: 17, port: udpPort, seq: 0,
			in: pkt{src: addrA, dst: addrB, ttl: 60, sport: 53, dport: udpPort, payload: []byte("answer")}.bytes()},
		{name: "udp to another port",
			in: pkt{src: addrA, dst: addrB, ttl: 60, sport: 53, dport: udpPort + 1, payload: []byte("x")}.bytes()},
		{name: "port unreachable quoting the udp probe", want: probe.StampTargetRx, proto: 17, port: udpPort, seq: 5,
			in: icmpError(macR, addrA, udpProbe, 3, 3, 1500)},
		{name: "ipv6 echo request", egress: true, v6: true, want: probe.StampTargetTx, proto: 58, port: echoID, seq: 8,
			in: pkt6{src: addrB6, dst: addrA6, hop: 64, next: 58, payload: echo(128, echoID, 8)}.bytes()},
		{name: "ipv6 echo reply", v6: true, want: probe.StampTargetRx, proto: 58, port: echoID, seq: 8,
			in: pkt6{src: addrA6, dst: addrB6, hop: 60, next: 58, payload: echo(129, echoID, 8)}.bytes()},
		{name: "ipv4 echo request (type 8) over ipv6", egress: true,
			in: pkt6{src: addrB6, dst: addrA6, hop: 64, next: 58, payload: echo(8, echoID, 8)}.bytes()},
		{name: "ipv6 syn", egress: true, v6: true, want: probe.StampTargetTx, proto: 6, port: tcpPort, seq: 2000,
			in: pkt6{src: addrB6, dst: addrA6, hop: 64, next: 6, payload: tcp(tcpPort, 8080, 2000, 0, syn)}.bytes()},
		{name: "ipv6 syn-ack", v6: true, want: probe.StampTargetRx, proto: 6, port: tcpPort, seq: 2000,
			in: pkt6{src: addrA6, dst: addrB6, hop: 60, next: 6, payload: tcp(8080, tcpPort, 9, 2001, syn|ack)}.bytes()},
		{name: "ipv6 udp probe", egress: true, v6: true, want: probe.StampTargetTx, proto: 17, port: udpPort, seq: 6, in: udpProbe6},
		{name: "ipv6 udp answer", v6: true, want: probe.StampTargetRx, proto: 17, port: udpPort,
			in: pkt6{src: addrA6, dst: addrB6, hop: 60, sport: 53, dport: udpPort, payload: []byte("answer")}.bytes()},
		{name: "ipv6 port unreachable quoting the udp probe", v6: true, want: probe.StampTargetRx, proto: 17, port: udpPort, seq: 6,
			in: icmp6Error(udpProbe6, 1, 4)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			on := uint32(1)
			if tc.offFlag {
				on = 0
			}
			if err := objs.TargetsOn.Set(on); err != nil {
				t.Fatal(err)
			}
			prog := objs.DnmsIngress
			if tc.egress {
				prog = objs.DnmsEgress
			}
			ret, out := run(t, prog, tc.in)
			if ret != tcActOK || !bytes.Equal(out, tc.in) {
				t.Fatalf("verdict %d, packet changed %v: target stamping must only watch", ret, !bytes.Equal(out, tc.in))
			}
			st := readStamps(t, rd)
			if tc.want == 0 {
				if len(st) != 0 {
					t.Fatalf("stamps %+v, want none", st)
				}
				return
			}
			if len(st) != 1 {
				t.Fatalf("%d stamps %+v, want 1", len(st), st)
			}
			s := st[0]
			local, remote := addrB, addrA
			if tc.v6 {
				local, remote = addrB6, addrA6
			}
			if s.Kind != tc.want || s.Type != tc.proto || s.Local.Port() != tc.port || s.Seq != tc.seq ||
				s.Local.Addr() != local || s.Remote != remote || s.Time == 0 {
				t.Fatalf("stamp %+v, want kind %d proto %d local %s:%d remote %s seq %d", s, tc.want, tc.proto, local, tc.port, remote, tc.seq)
			}
		})
	}
}
