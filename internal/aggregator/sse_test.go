package aggregator

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t *testing.T, in string, max int) ([]sseEvent, *sseReader) {
	t.Helper()
	r := newSSEReader(strings.NewReader(in), max)
	var out []sseEvent
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, r
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		out = append(out, ev)
	}
}

func TestSSEReader(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		want     []sseEvent
		garbage  int
		comments int
	}{
		{
			name: "api framing",
			in:   "retry: 2000\n\nevent: snapshot\nid: 7\ndata: {\"eventId\":7}\n\n: hb\n\nevent: route-add\nid: 8\ndata: {}\n\n",
			want: []sseEvent{
				{Name: "snapshot", ID: "7", HasID: true, Data: []byte(`{"eventId":7}`)},
				{Name: "route-add", ID: "8", HasID: true, Data: []byte(`{}`)},
			},
			comments: 1,
		},
		{
			name: "crlf, no space after colon, default name",
			in:   "data:x\r\nid:3\r\n\r\n",
			want: []sseEvent{{Name: "message", ID: "3", HasID: true, Data: []byte("x")}},
		},
		{
			name: "multi-line data is joined with newlines",
			in:   "event: e\ndata: a\ndata\ndata: c\n\n",
			want: []sseEvent{{Name: "e", Data: []byte("a\n\nc")}},
		},
		{
			name: "only the first space is stripped",
			in:   "data:  two\n\n",
			want: []sseEvent{{Name: "message", Data: []byte(" two")}},
		},
		{
			name:    "garbage lines are ignored",
			in:      "garbage\n\x00\xff\xfe:zz\nevent: resync\nbogus: 1\ndata: {}\n\n",
			want:    []sseEvent{{Name: "resync", Data: []byte("{}")}},
			garbage: 3,
		},
		{
			name: "event without data is not dispatched",
			in:   "event: x\nid: 4\n\nevent: y\ndata: 1\n\n",
			want: []sseEvent{{Name: "y", Data: []byte("1")}},
		},
		{
			name: "id with NUL is ignored",
			in:   "id: 1\x002\ndata: d\n\n",
			want: []sseEvent{{Name: "message", Data: []byte("d")}},
		},
		{
			name: "BOM at start",
			in:   "\xef\xbb\xbfdata: d\n\n",
			want: []sseEvent{{Name: "message", Data: []byte("d")}},
		},
		{
			name: "partial event at EOF is dropped",
			in:   "data: whole\n\nevent: half\ndata: {\"trunc",
			want: []sseEvent{{Name: "message", Data: []byte("whole")}},
		},
		{
			name: "unterminated event at EOF is dropped",
			in:   "data: a\n",
			want: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, r := readAll(t, tc.in, 1024)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d events %+v, want %d %+v", len(got), got, len(tc.want), tc.want)
			}
			for i := range got {
				if got[i].Name != tc.want[i].Name || got[i].ID != tc.want[i].ID || got[i].HasID != tc.want[i].HasID ||
					string(got[i].Data) != string(tc.want[i].Data) || got[i].Broken {
					t.Errorf("event %d: got %+v (data %q), want %+v (data %q)", i, got[i], got[i].Data, tc.want[i], tc.want[i].Data)
				}
			}
			if r.Garbage != tc.garbage || r.Comments != tc.comments {
				t.Errorf("garbage %d comments %d, want %d %d", r.Garbage, r.Comments, tc.garbage, tc.comments)
			}
		})
	}
}

func TestSSEReaderBoundsLines(t *testing.T) {
	long := strings.Repeat("x", 5000)
	in := "event: snapshot\nid: 1\ndata: " + long + "\n\n" + // one over-long line
		"data: " + strings.Repeat("y", 800) + "\ndata: " + strings.Repeat("y", 800) + "\n\n" + // data over max in total
		"event: ok\ndata: fine\n\n"
	got, r := readAll(t, in, 1024)
	if len(got) != 3 {
		t.Fatalf("got %d events, want 3: %+v", len(got), got)
	}
	if !got[0].Broken || got[0].Name != "snapshot" || got[0].ID != "1" {
		t.Errorf("over-long line: %+v", got[0])
	}
	if !got[1].Broken {
		t.Errorf("over-long data: %+v", got[1])
	}
	if got[2].Broken || got[2].Name != "ok" || string(got[2].Data) != "fine" {
		t.Errorf("stream did not recover: %+v", got[2])
	}
	if r.Overlong != 2 {
		t.Errorf("overlong %d, want 2", r.Overlong)
	}
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("event: snapshot\nid: 7\ndata: {}\n\n: hb\n\n"))
	f.Add([]byte("data:x\r\n\r\nid\nretry: 1\n\n"))
	f.Add([]byte("\xef\xbb\xbf:\n\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newSSEReader(strings.NewReader(string(b)), 256)
		for range len(b) + 1 {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if len(ev.Data) > 256 {
				t.Fatalf("event data %d bytes exceeds the bound", len(ev.Data))
			}
		}
		t.Fatal("more events than input bytes")
	})
}
