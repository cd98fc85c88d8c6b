package graph

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestBucketsJSON: the buckets' own codec round-trips every int64 and
// refuses what is not an array of arrays of integers.
func TestBucketsJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		bs := make(Buckets, rng.IntN(4))
		for i := range bs {
			bs[i] = make([]int64, rng.IntN(30))
			for j := range bs[i] {
				switch rng.IntN(4) {
				case 0:
					bs[i][j] = math.MinInt64 + rng.Int64N(3)
				case 1:
					bs[i][j] = math.MaxInt64 - rng.Int64N(3)
				default:
					bs[i][j] = rng.Int64() - math.MaxInt64/2
				}
			}
		}
		b, err := json.Marshal(bs)
		if err != nil {
			t.Fatal(err)
		}
		var std [][]int64
		if err := json.Unmarshal(b, &std); err != nil || !reflect.DeepEqual([][]int64(bs), std) {
			t.Fatalf("encoding/json reads %s as %v (%v), want %v", b, std, err, bs)
		}
		var got Buckets
		if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, bs) {
			t.Fatalf("read %s as %v (%v), want %v", b, got, err, bs)
		}
	}
	var got Buckets
	if err := json.Unmarshal([]byte(" [ [ 1 , -2 ] ,[]\n] "), &got); err != nil || !reflect.DeepEqual(got, Buckets{{1, -2}, {}}) {
		t.Fatalf("with spaces: %v %v", got, err)
	}
	for _, bad := range []string{`[[1.5]]`, `[[1e3]]`, `[[9223372036854775808]]`, `[[-9223372036854775809]]`,
		`[["1"]]`, `[[[1]]]`, `[1]`, `{}`, `[[1],]`, `[null]`, `[[1 2]]`, `"x"`, `[[-]]`} {
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("%s: read as %v, want an error", bad, got)
		}
	}
}

// The delta batch as encoding/json reads it, without the custom reader.
type (
	stdBatch struct {
		T0     int64      `json:"t0"`
		Routes []stdRoute `json:"routes"`
	}
	stdRoute struct {
		ID      string      `json:"id"`
		Full    bool        `json:"full,omitempty"`
		Window  int         `json:"w,omitempty"`
		Jitter  float64     `json:"j"`
		Source  *TimeSource `json:"src,omitempty"`
		HopRTTs []float64   `json:"hopRttSeconds,omitempty"`
		Keys    []stdKey    `json:"k,omitempty"`
	}
	stdKey struct {
		Port    uint16    `json:"p"`
		Head    int       `json:"h"`
		Len     int       `json:"n"`
		Base    *float64  `json:"base,omitempty"`
		Buckets [][]int64 `json:"b,omitempty"`
	}
)

// sameAsStd reports how d differs from s ("" when it does not).
func sameAsStd(d DeltaBatch, s stdBatch) string {
	b1, _ := json.Marshal(d)
	b2, _ := json.Marshal(s)
	if string(b1) != string(b2) {
		return fmt.Sprintf("\nreader   %s\nstandard %s", b1, b2)
	}
	// nil and empty slices encode alike when omitted: compare those too.
	if (d.Routes == nil) != (s.Routes == nil) {
		return "routes nil on one side"
	}
	for i := range d.Routes {
		a, b := d.Routes[i], s.Routes[i]
		if (a.Keys == nil) != (b.Keys == nil) || (a.HopRTTs == nil) != (b.HopRTTs == nil) {
			return fmt.Sprintf("route %d: nil and empty lists differ", i)
		}
		for j := range a.Keys {
			if (a.Keys[j].Buckets == nil) != (b.Keys[j].Buckets == nil) {
				return fmt.Sprintf("route %d key %d: nil and empty buckets differ", i, j)
			}
		}
	}
	return ""
}

// TestDeltaBatchJSON: the reader reads what the member writes as
// encoding/json does, and refuses what it is stricter about.
func TestDeltaBatchJSON(t *testing.T) {
	_, d := deltaSeed(t)
	b, _ := json.Marshal(d)
	var got DeltaBatch
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	var std stdBatch
	if err := json.Unmarshal(b, &std); err != nil {
		t.Fatal(err)
	}
	if diff := sameAsStd(got, std); diff != "" || !reflect.DeepEqual(got, d) {
		t.Fatalf("read differently: %s\n%+v\nwant %+v", diff, got, d)
	}
	got, std = DeltaBatch{}, stdBatch{}
	ok := `{"t0":1,"x":[{"y":null},"s",-1.5e3,true],"ROUTES":[{"id":"r\u0031","SRC":"ebpf","j":1e-5,"hopRttSeconds":[],"k":[{"p":65535,"base":null,"b":[]}]}]}`
	if err := json.Unmarshal([]byte(ok), &got); err != nil {
		t.Fatalf("%s: %v", ok, err)
	}
	if err := json.Unmarshal([]byte(ok), &std); err != nil {
		t.Fatal(err)
	}
	if diff := sameAsStd(got, std); diff != "" {
		t.Fatalf("%s: %s", ok, diff)
	}
	for _, bad := range []string{
		`{"t0":1,"t0":2}`, `{"t0":1.5}`, `{"routes":[null]}`, `{"routes":[{"k":[{"p":65536}]}]}`,
		`{"routes":[{"k":[{"p":-1}]}]}`, `{"routes":[{"j":"x"}]}`, `{"routes":[{"id":1}]}`, `[]`,
		`{"routes":[{"w":1e2}]}`, `{"routes":[{"full":1}]}`, `{"routes":[{"id":"a","ID":"b"}]}`,
	} {
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("%s: read as %+v, want an error", bad, got)
		}
	}
}

// FuzzDeltaBatchJSON: whatever the reader accepts, encoding/json reads
// the same way.
func FuzzDeltaBatchJSON(f *testing.F) {
	_, d := deltaSeed(f)
	b, _ := json.Marshal(d)
	f.Add(b)
	f.Add([]byte(`{"t0":1,"x":[{"y":null},"s",-1.5e3,true],"ROUTES":[{"id":"r\u0031","SRC":"ebpf","j":1e-5,"hopRttSeconds":[],"k":[{"p":65535,"base":null,"b":[]}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got DeltaBatch
		if json.Unmarshal(b, &got) != nil {
			return
		}
		var std stdBatch
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("%q: the reader accepts it, encoding/json says %v", b, err)
		}
		if diff := sameAsStd(got, std); diff != "" {
			t.Fatalf("%q: %s", b, diff)
		}
	})
}

// FuzzBucketsJSON: whatever the buckets' codec reads, encoding/json reads
// the same way.
func FuzzBucketsJSON(f *testing.F) {
	f.Add([]byte(`[[0,1,-2,9223372036854775807,-9223372036854775808],[]]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[[1.0]]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Buckets
		if json.Unmarshal(b, &got) != nil {
			return
		}
		var std [][]int64
		if err := json.Unmarshal(b, &std); err != nil || !reflect.DeepEqual([][]int64(got), std) {
			t.Fatalf("%q: read %v, encoding/json %v (%v)", b, got, std, err)
		}
	})
}
