package api

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/dnms/dnms/internal/graph"
)

// snapDocs are the documents the decoder is checked on: the saved fixture
// graph, the goldens of both packages, and hand-written ones with the
// routes first, escapes, nulls and unknown fields.
func snapDocs(t testing.TB) map[string][]byte {
	docs := map[string][]byte{}
	read := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		docs[name] = b
	}
	read("saved fixture", savedGraph(t))
	read("api golden", "testdata/graph.golden.json")
	read("graph golden", "../graph/testdata/snapshot.golden.json")
	docs["routes first, escapes, nulls, unknown fields"] = []byte(`{
  "routes": [
    {"id": "r\u0031", "src": "198.18.0.1", "hops": ["a", "b\/\"c\\", "\u00e9\ud83d\ude00"],
     "keys": [{"src": "198.18.0.1", "srcPort": 7}, {"srcPort": 65535, "extra": [1, {"k": null}]}],
     "metrics": {"samples": 100, "lost": 3, "lostForward": 1, "lostReverse": 1, "loss": 0.03,
       "rttMinSeconds": 1e-4, "rttAvgSeconds": 1.5E-4, "rttP50Seconds": 0.000125,
       "rttExcessByKeySeconds": [-1, 2.5e-5], "source": "ebpf", "since": "2026-01-01T00:00:00Z",
       "future": {"a": [true, false, null, -0.5e+3]}},
     "origin": "agent\t1", "hopRttSeconds": [0, 1e-3, 0]},
    {"id": "r2", "hops": ["\u00e9\ud83d\ude00", "b/\"c\\"], "keys": null, "metrics": {"samples": 10, "lost": 10, "rttExcessByKeySeconds": []}}
  ],
  "eventId": 18446744073709551615,
  "nodes": [{"id": "a", "addr": "198.18.0.1", "kind": "host"}, {"id": "b/\"c\\", "addr": "fd00::1", "kind": "router"},
            {"id": "\u00e9😀", "addr": "", "kind": "silent"}, {"id": "lone \ud800 surrogate", "kind": null}],
  "edges": [{"src": "a", "dst": "b/\"c\\", "routes": 1}, {"src": "b/\"c\\", "dst": "é😀", "routes": 2},
            {"src": "é😀", "dst": "b/\"c\\", "routes": 1}],
  "other": {"nested": [[[]]], "s": "\u0000"}
}
`)
	return docs
}

// decodeKeeping decodes doc with snapDecoder, keeping the routes.
func decodeKeeping(doc []byte) (graph.Snapshot, healthDoc, error) {
	d := newSnapDecoder(bytes.NewReader(doc))
	d.keep = true
	h, err := d.decode()
	return d.snap, h, err
}

// normalize clears what the health decoder does not read.
func normalize(s graph.Snapshot) graph.Snapshot {
	for i := range s.Routes {
		r := &s.Routes[i]
		r.Src, r.Dst, r.HopRTTs, r.Metrics.Since = graph.Route{}.Src, graph.Route{}.Dst, nil, graph.Metrics{}.Since
		for j := range r.Keys {
			r.Keys[j] = graph.RouteKey{SrcPort: r.Keys[j].SrcPort}
		}
	}
	return s
}

// TestSnapDecodeMatchesJSON: on every document, the decoder reads exactly
// what encoding/json reads of the fields health uses, and `dnms health`
// gives the same rows as graph.HealthOf over encoding/json's snapshot.
func TestSnapDecodeMatchesJSON(t *testing.T) {
	for name, doc := range snapDocs(t) {
		t.Run(name, func(t *testing.T) {
			var want graph.Snapshot
			if err := json.Unmarshal(doc, &want); err != nil {
				t.Fatal(err)
			}
			got, h, err := decodeKeeping(doc)
			if err != nil {
				t.Fatal(err)
			}
			if w := normalize(want); !reflect.DeepEqual(got, w) {
				t.Fatalf("decoded\n%+v\nencoding/json\n%+v", got, w)
			}
			wantRows, wantErr := graph.HealthOf(want)
			if (wantErr == nil) != (h.invalid == nil) {
				t.Fatalf("HealthOf error %v, decoder's check %v", wantErr, h.invalid)
			}
			if wantErr != nil {
				if wantErr.Error() != h.invalid.Error() {
					t.Errorf("HealthOf error %q, decoder's check %q", wantErr, h.invalid)
				}
				return
			}
			// The streaming path (routes checked as read) gives the same rows.
			s, err := readHealthDoc(bytes.NewReader(doc))
			if err != nil {
				t.Fatal(err)
			}
			if rows := s.input.Run(graph.DefaultHealthConfig()); !reflect.DeepEqual(rows, wantRows) {
				t.Errorf("rows\n%+v\nHealthOf\n%+v", rows, wantRows)
			}
			if s.routes != len(want.Routes) || s.nodes != len(want.Nodes) || s.links != len(want.Links) || s.eventID != want.EventID {
				t.Errorf("counts %+v, want %d routes %d nodes %d links event %d", s, len(want.Routes), len(want.Nodes), len(want.Links), want.EventID)
			}
		})
	}
}

// TestSnapDecodeErrors: malformed documents are one-line errors naming
// the line and column (1-based, in bytes) of the fault.
func TestSnapDecodeErrors(t *testing.T) {
	cases := []struct{ doc, want string }{
		{"", "empty document"},
		{"[1]", "not a graph document"},
		{"nul", "not a graph document"},
		{"x", "line 1 column 1: invalid character 'x' looking for beginning of value"},
		{"{", "unexpected end of document"},
		{`{"routes": [`, "unexpected end of document"},
		{`{"routes": [{"id": "r`, "unexpected end of document"},
		{`{"routes": [{"id": "r\`, "unexpected end of document"},
		{`{"a": 1} x`, "trailing data"},
		{`{"a" 1}`, "line 1 column 6: graph document: want ':' after a member name, found '1'"},
		{`{"a": 1,}`, "line 1 column 9: graph document: want a string, found '}'"},
		{`{"a": 1 "b": 2}`, `line 1 column 9: want ',' or '}', found '"'`},
		{"{\n  \"routes\": \"many\"}", "line 2 column 13: routes: want an array, found '\"'"},
		{"{\n\n   \"routes\": [{\"hops\": [1]}]}", "line 3 column 25: hop: want a string, found '1'"},
		{`{"routes": [{"metrics": {"samples": 1.5}}]}`, "line 1 column 40: metrics samples: number 1.5 is not an integer"},
		{`{"routes": [{"metrics": {"samples": "1"}}]}`, "line 1 column 37: metrics samples: want a number, found '\"'"},
		{`{"routes": [{"metrics": {"loss": 1e999}}]}`, "metrics: number 1e999 out of range"},
		{`{"routes": [{"metrics": {"loss": -}}]}`, "line 1 column 35: invalid character '}' in number"},
		{`{"routes": [{"metrics": {"loss": 01}}]}`, "line 1 column 35: invalid character '1' in number"},
		{`{"routes": [{"metrics": {"loss": 1.}}]}`, "line 1 column 36: invalid character '}' in number"},
		{`{"routes": [{"keys": [{"srcPort": 65536}]}]}`, "key srcPort: number 65536 is not an integer in [0, 65535]"},
		{`{"routes": [{"keys": [{"srcPort": -1}]}]}`, "key srcPort: number -1 is not an integer in [0, 65535]"},
		{`{"eventId": -1}`, "eventId: number -1 is not an unsigned 64-bit integer"},
		{`{"x": tru}`, "line 1 column 10: invalid character '}' in literal true"},
		{`{"x": "a` + "\n" + `b"}`, "line 1 column 9: invalid control character byte 0x0a in string"},
		{`{"x": "\x"}`, `line 1 column 9: invalid escape 'x' in string`},
		{`{"x": "\u12g4"}`, `line 1 column 12: invalid character 'g' in \u escape`},
		{`{"nodes": [{"addr": "300.1.1.1"}]}`, "node addr: ParseAddr"},
		{strings.Repeat("[", 20000), "not a graph document"},
		{`{"x": ` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, "exceeded max depth"},
	}
	for _, c := range cases {
		_, err := newSnapDecoder(strings.NewReader(c.doc)).decode()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: error %v, want one containing %q", c.doc, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%.40q: error %q is not one line", c.doc, err)
		}
	}
}

// TestSnapDecodeBufferEdges: a document read one byte at a time (every
// token split across reads) decodes like one read at once, and an error's
// line and column do not depend on where reads end.
func TestSnapDecodeBufferEdges(t *testing.T) {
	for name, doc := range snapDocs(t) {
		whole, _, err1 := decodeKeeping(doc)
		d := newSnapDecoder(&oneByteReader{doc})
		d.keep = true
		_, err2 := d.decode()
		if err1 != nil || err2 != nil || !reflect.DeepEqual(whole, d.snap) {
			t.Errorf("%s: one byte at a time: %v, %v, equal %v", name, err1, err2, reflect.DeepEqual(whole, d.snap))
		}
	}
	bad := []byte("{\n \"routes\": [\n  {\"id\": \"a\"},\n  {\"id\": \"b\", \"hops\": [\"x\" \"y\"]}]}")
	_, err1 := newSnapDecoder(bytes.NewReader(bad)).decode()
	_, err2 := newSnapDecoder(&oneByteReader{bad}).decode()
	const want = "line 4 column 28"
	if err1 == nil || err2 == nil || !strings.Contains(err1.Error(), want) || err1.Error() != err2.Error() {
		t.Errorf("errors %v and %v, want both at %s", err1, err2, want)
	}
}

type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:1], r.b)
	r.b = r.b[n:]
	return n, nil
}

// FuzzSnapDecode: no input panics, and the decoder never accepts what is
// not JSON.
func FuzzSnapDecode(f *testing.F) {
	f.Add(snapDocs(f)["routes first, escapes, nulls, unknown fields"])
	f.Add([]byte(`{"routes":[{"id":"r","hops":["a\u00"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := newSnapDecoder(bytes.NewReader(data)).decode()
		if err == nil && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
	})
}
