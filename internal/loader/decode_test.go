package loader

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/dnms/dnms/internal/probe"
)

func event(ev bpfDnmsEvent) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&ev)), unsafe.Sizeof(ev))
}

func TestDecode(t *testing.T) {
	icmp := bpfDnmsEvent{Ts: 42, Seq: 7, LocalPort: 40001, RemotePort: 33435, Kind: 3, Type: 3, Ttl: 2,
		IcmpType: 11, Family: 4}
	copy(icmp.LocalAddr[:], []byte{198, 18, 0, 1})
	copy(icmp.RemoteAddr[:], []byte{198, 18, 0, 2})
	copy(icmp.RouterAddr[:], []byte{198, 18, 100, 1})
	tx := icmp
	tx.Kind = 1
	v6 := icmp
	v6.Family = 6
	v6.LocalAddr = netip.MustParseAddr("fd00::1").As16()
	v6.RemoteAddr = netip.MustParseAddr("fd00::2").As16()
	v6.RouterAddr = netip.MustParseAddr("fd00::99").As16()
	bad := icmp
	bad.Family = 5
	for _, tc := range []struct {
		name string
		raw  []byte
		ok   bool
		want probe.Stamp
	}{
		{"icmp", event(icmp), true, probe.Stamp{Kind: probe.StampRxICMP,
			Local:  netip.MustParseAddrPort("198.18.0.1:40001"),
			Remote: netip.MustParseAddr("198.18.0.2"), Router: netip.MustParseAddr("198.18.100.1"),
			ICMPType: 11, Type: 3, Seq: 7, TTL: 2, Time: 42}},
		{"tx has no router", event(tx), true, probe.Stamp{Kind: probe.StampTx,
			Local:  netip.MustParseAddrPort("198.18.0.1:40001"),
			Remote: netip.MustParseAddr("198.18.0.2"), ICMPType: 11, Type: 3, Seq: 7, TTL: 2, Time: 42}},
		{"short", event(icmp)[:40], false, probe.Stamp{}},
		{"empty", nil, false, probe.Stamp{}},
		{"ipv6", event(v6), true, probe.Stamp{Kind: probe.StampRxICMP,
			Local:  netip.MustParseAddrPort("[fd00::1]:40001"),
			Remote: netip.MustParseAddr("fd00::2"), Router: netip.MustParseAddr("fd00::99"),
			ICMPType: 11, Type: 3, Seq: 7, TTL: 2, Time: 42}},
		{"unknown family", event(bad), false, probe.Stamp{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, ok := decode(tc.raw, false)
			if ok != tc.ok || got != tc.want {
				t.Errorf("decode = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzDecode: ring buffer records come from our own programs, but decode
// must not panic on any bytes.
func FuzzDecode(f *testing.F) {
	ev := bpfDnmsEvent{Kind: 3, Family: 4}
	f.Add(event(ev))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) { decode(b, true) })
}

func TestLoadErrorsAreOneLine(t *testing.T) {
	cases := []Config{
		{Ifaces: []string{"eth0"}, PingPort: 0},
		{Ifaces: []string{"eth0"}, PingPort: 33435, Mode: "xdp"},
	}
	if os.Geteuid() == 0 {
		// Root: the programs load, the interface lookup fails.
		cases = append(cases, Config{Ifaces: []string{"dnmsnosuch0"}, PingPort: 33435})
	}
	for _, cfg := range cases {
		l, err := Load(cfg)
		if err == nil {
			l.Close()
			t.Errorf("Load(%+v) succeeded", cfg)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Load(%+v) error spans lines: %q", cfg, err)
		}
	}
}

func TestDecodeArrivalStamp(t *testing.T) {
	const ts = int64(5_000_000_000)               // TC ingress, monotonic
	const mono = ts + 400                         // the program's later clock pair
	const real = int64(1_700_000_000_000_000_000) // arrival, realtime
	ack := bpfDnmsEvent{Ts: uint64(ts), Kind: 2, Type: 2, Family: 4, LocalPort: 1}
	for _, tc := range []struct {
		name    string
		rxReal  int64
		rxTai   int64 // read with mono
		arrival bool
		want    int64
		fromSkb bool
	}{
		{"tai = realtime, 30us backlog", real, real + 30_400, true, ts - 30_000, true},
		{"tai = realtime + 37s", real, real + 37_000_030_400, true, ts - 30_000, true},
		{"arrival stamps off", real, real + 30_400, false, ts, false},
		{"no arrival stamp", 0, real + 30_400, true, ts, false},
		{"arrival after tc", real, real + 100, true, ts, false},
		{"arrival implausibly early", real, real + int64(2*time.Millisecond), true, ts, false},
		{"tai before realtime", real, real - 1_000, true, ts, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := ack
			ev.RxReal, ev.RxMono, ev.RxTai = uint64(tc.rxReal), uint64(mono), uint64(tc.rxTai)
			s, fromSkb, ok := decode(event(ev), tc.arrival)
			if !ok || s.Time != tc.want || fromSkb != tc.fromSkb {
				t.Errorf("decode: time %d fromSkb %v ok %v; want %d %v", s.Time, fromSkb, ok, tc.want, tc.fromSkb)
			}
			// The hook's own time goes along with an arrival stamp, for
			// the matcher to fall back to.
			if wantHook := map[bool]int64{true: ts}[tc.fromSkb]; s.Hook != wantHook {
				t.Errorf("decode: hook %d, want %d", s.Hook, wantHook)
			}
		})
	}
}
