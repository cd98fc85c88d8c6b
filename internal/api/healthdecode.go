package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"

	"github.com/dnms/dnms/internal/graph"
)

// readSnapshot decodes one graph document as a stream: routes are decoded
// one at a time and their hop names interned, so a saved graph of a large
// fabric is never held twice (bytes and values) in memory.
func readSnapshot(r io.Reader) (graph.Snapshot, error) {
	var snap graph.Snapshot
	lr := &lineReader{r: io.LimitReader(r, maxHealthInput+1)}
	dec := json.NewDecoder(lr)
	err := decodeSnapshot(dec, &snap)
	if lr.n > maxHealthInput {
		return snap, fmt.Errorf("larger than %d MiB", maxHealthInput>>20)
	}
	if err != nil {
		return snap, lr.explain(dec, err)
	}
	if len(snap.Routes) == 0 {
		return snap, errors.New("no routes in the document: is it a /v1/graph or /v1/aggregator/graph document?")
	}
	return snap, nil
}

// docError is a complaint about the document as a whole: it carries no
// position.
type docError string

func (e docError) Error() string { return string(e) }

const (
	errNotGraph = docError("not a graph document: want the JSON object of /v1/graph " +
		"(with nodes, edges and routes), not an array or scalar")
	errEmpty    = docError("empty document: want the JSON object of /v1/graph")
	errTrailing = docError("malformed JSON: trailing data after the graph document")
)

func decodeSnapshot(dec *json.Decoder, snap *graph.Snapshot) error {
	tok, err := dec.Token()
	if err == io.EOF {
		return errEmpty
	}
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errNotGraph
	}
	for dec.More() {
		if err := decodeField(dec, snap); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errTrailing
	}
	return nil
}

// decodeField decodes one member of the graph object.
func decodeField(dec *json.Decoder, snap *graph.Snapshot) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	key, _ := tok.(string)
	switch key {
	case "eventId":
		return dec.Decode(&snap.EventID)
	case "nodes":
		return dec.Decode(&snap.Nodes)
	case "edges":
		return dec.Decode(&snap.Links)
	case "routes":
		return decodeRoutes(dec, &snap.Routes)
	}
	var skip json.RawMessage
	return dec.Decode(&skip)
}

// decodeRoutes decodes the routes array element by element, interning hop
// names.
func decodeRoutes(dec *json.Decoder, out *[]graph.Route) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%v", tok), Field: "routes", Offset: dec.InputOffset(),
			Type: typeOfRoutes}
	}
	names := make(map[string]string)
	for dec.More() {
		var w wireRoute
		if err := dec.Decode(&w); err != nil {
			return err
		}
		for i, h := range w.Hops {
			if s, ok := names[h]; ok {
				w.Hops[i] = s
			} else {
				names[h] = h
			}
		}
		r := graph.Route{ID: w.ID, Hops: w.Hops, Metrics: w.Metrics, Origin: w.Origin, Keys: make([]graph.RouteKey, len(w.Keys))}
		for i, k := range w.Keys {
			r.Keys[i].SrcPort = k.SrcPort
		}
		*out = append(*out, r)
	}
	_, err = dec.Token() // ']'
	return err
}

// wireRoute is what health reads of a route: the key and route addresses
// are not decoded (the estimator pairs a route with its reverse by its
// endpoint hops and the key's port), which spares two address parses per
// key on a document of 100k+ routes.
type wireRoute struct {
	ID   string   `json:"id"`
	Hops []string `json:"hops"`
	Keys []struct {
		SrcPort uint16 `json:"srcPort"`
	} `json:"keys"`
	Metrics graph.Metrics `json:"metrics"`
	Origin  string        `json:"origin"`
}

// lineReader counts what passed through it and remembers where recent lines
// start, so a decode error can name its line and column.
type lineReader struct {
	r       io.Reader
	n       int64   // bytes read
	dropped int64   // newlines forgotten (older than the window)
	nl      []int64 // offsets of the remembered newlines
}

func (l *lineReader) Read(p []byte) (int, error) {
	k, err := l.r.Read(p)
	for i := 0; i < k; {
		j := bytes.IndexByte(p[i:k], '\n')
		if j < 0 {
			break
		}
		l.nl = append(l.nl, l.n+int64(i+j))
		i += j + 1
	}
	l.n += int64(k)
	if len(l.nl) > 1<<16 {
		half := len(l.nl) / 2
		l.dropped += int64(half)
		l.nl = append(l.nl[:0], l.nl[half:]...)
	}
	return k, err
}

// explain turns a decode error into a one-line message with its position.
func (l *lineReader) explain(dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	off := int64(-1)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("malformed JSON: unexpected end of document")
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	case errors.As(err, new(docError)):
		return err
	default:
		off = dec.InputOffset()
	}
	i := sort.Search(len(l.nl), func(i int) bool { return l.nl[i] >= off })
	line := l.dropped + int64(i) + 1
	col := off + 1
	if i > 0 {
		col = off - l.nl[i-1]
	}
	return fmt.Errorf("malformed JSON: line %d column %d: %v", line, col, err)
}

var typeOfRoutes = reflect.TypeFor[[]graph.Route]()
