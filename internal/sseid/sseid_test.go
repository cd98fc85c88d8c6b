package sseid

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		inst string
		seq  uint64
		ok   bool
	}{
		{"ab12-7", "ab12", 7, true},
		{"a-b-0", "a-b", 0, true},
		{"7", "", 0, false},
		{"-7", "", 0, false},
		{"ab-", "", 0, false},
		{"ab-x", "", 0, false},
		{"ab-18446744073709551616", "", 0, false},
		{"", "", 0, false},
	} {
		inst, seq, ok := Parse(tc.in)
		if inst != tc.inst || seq != tc.seq || ok != tc.ok {
			t.Errorf("Parse(%q) = %q %d %v, want %q %d %v", tc.in, inst, seq, ok, tc.inst, tc.seq, tc.ok)
		}
	}
	i := NewInstance()
	if inst, seq, ok := Parse(Format(i, 42)); !ok || inst != i || seq != 42 {
		t.Errorf("round trip %q: %q %d %v", i, inst, seq, ok)
	}
	if NewInstance() == i {
		t.Error("two instances alike")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("ab12-7")
	f.Add("-")
	f.Fuzz(func(t *testing.T, s string) {
		inst, seq, ok := Parse(s)
		if ok && Format(inst, seq) != s {
			// Leading zeros or '+' parse but format differently: still the
			// same instance and seq on a second round.
			if i2, s2, ok2 := Parse(Format(inst, seq)); !ok2 || i2 != inst || s2 != seq {
				t.Fatalf("round trip of %q broke", s)
			}
		}
	})
}
