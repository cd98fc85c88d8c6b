package loader

import (
	"net/netip"
	"testing"
)

// TestKeyedReflector runs the keyed in-kernel reflector on crafted packets:
// it answers nothing without the HMAC flag, nothing from a non-member, and
// never starts or restarts a flow's counters at an epoch userspace has not
// confirmed; each refusal passes the ping up (TC_ACT_OK, bytes unchanged)
// and is counted by reason.
func TestKeyedReflector(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Keyed = true
	objs, _ := testObjs(t, cfg)
	l := &Loader{cfg: cfg, objs: *objs}
	verdict := func(h dnmsHdr) (uint32, dnmsHdr) {
		t.Helper()
		in := pingFrame(h).bytes()
		ret, out := run(t, objs.DnmsIngress, in)
		if ret != tcActRedirect && string(out[:len(in)]) != string(in) {
			t.Fatalf("a ping left to userspace was modified")
		}
		return ret, parseHdr(out[payloadOff:])
	}
	keyed := func(seq uint64) dnmsHdr {
		h := ping(seq)
		h.Flags = flagHMAC
		h.HMAC = [16]byte{1, 2, 3}
		return h
	}
	declined := func(reason string) float64 { return float64(l.stat(declineReasons[reason])) }

	if ret, _ := verdict(ping(1)); ret != tcActOK {
		t.Fatalf("ping without HMAC: verdict %d, want pass to userspace", ret)
	}
	if ret, _ := verdict(keyed(1)); ret != tcActOK {
		t.Fatalf("HMAC ping from a non-member: verdict %d, want pass", ret)
	}
	if err := l.SetMembers([]netip.Addr{addrA, netip.MustParseAddr("fd00::1")}); err != nil {
		t.Fatal(err)
	}
	if ret, _ := verdict(keyed(1)); ret != tcActOK {
		t.Fatalf("member, unconfirmed epoch: verdict %d, want pass", ret)
	}
	// Userspace answered ping 1 (its counters: 1, 1) and confirms the
	// epoch: the kernel continues that count.
	if err := l.ConfirmEpoch(addrA, 40001, testEpoch, 1, 1); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(2); seq <= 4; seq++ {
		ret, a := verdict(keyed(seq))
		if ret != tcActRedirect || a.RxCount != seq || a.AckCount != seq {
			t.Fatalf("confirmed ping %d: verdict %d rx %d ack %d, want redirect and %d", seq, ret, a.RxCount, a.AckCount, seq)
		}
		if a.HMAC != keyed(seq).HMAC {
			t.Fatalf("the ack does not echo the ping's tag")
		}
	}
	// A spoofed epoch from a member address: passed up, counters kept.
	spoof := keyed(5)
	spoof.Epoch = testEpoch + 1
	if ret, _ := verdict(spoof); ret != tcActOK {
		t.Fatalf("unconfirmed new epoch: verdict %d, want pass", ret)
	}
	if ret, a := verdict(keyed(6)); ret != tcActRedirect || a.RxCount != 5 {
		t.Fatalf("after the spoof: verdict %d rx %d, want counters kept (rx 5)", ret, a.RxCount)
	}
	// A late confirmation of the epoch the kernel is counting changes nothing.
	if err := l.ConfirmEpoch(addrA, 40001, testEpoch, 1, 1); err != nil {
		t.Fatal(err)
	}
	if ret, a := verdict(keyed(7)); ret != tcActRedirect || a.RxCount != 6 {
		t.Fatalf("after a late confirmation: verdict %d rx %d, want 6", ret, a.RxCount)
	}
	// The real prober restarted: userspace answered its first ping of the
	// new epoch and confirmed it.
	if err := l.ConfirmEpoch(addrA, 40001, testEpoch+1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if ret, a := verdict(spoof); ret != tcActRedirect || a.RxCount != 2 {
		t.Fatalf("confirmed new epoch: verdict %d rx %d, want 2 (after userspace's 1)", ret, a.RxCount)
	}
	// Members leave: their pings go up again.
	if err := l.SetMembers(nil); err != nil {
		t.Fatal(err)
	}
	if ret, _ := verdict(keyed(8)); ret != tcActOK {
		t.Fatalf("after the member left: verdict %d, want pass", ret)
	}
	for reason, want := range map[string]float64{"no_hmac": 1, "not_member": 2, "epoch": 2} {
		if got := declined(reason); got != want {
			t.Errorf("declined{%s} = %v, want %v", reason, got, want)
		}
	}
}

// TestUnkeyedReflectorAnswersAll pins the unkeyed behaviour the keyed mode
// changes: no HMAC, any source, any epoch is answered.
func TestUnkeyedReflectorAnswersAll(t *testing.T) {
	objs, _ := testObjs(t, DefaultConfig())
	if ret, _ := run(t, objs.DnmsIngress, pingFrame(ping(1)).bytes()); ret != tcActRedirect {
		t.Fatalf("verdict %d, want redirect", ret)
	}
}
