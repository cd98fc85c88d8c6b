package api

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"

	"github.com/dnms/dnms/internal/graph"
)

// The encoding/json decoder `dnms health` used before snapdecode.go, kept
// as the baseline of BenchmarkHealthDecode and the reference of
// TestSnapDecodeMatchesJSON.

func jsonDecodeSnapshot(dec *json.Decoder, snap *graph.Snapshot) error {
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
		if err := jsonDecodeField(dec, snap); err != nil {
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

// jsonDecodeField decodes one member of the graph object.
func jsonDecodeField(dec *json.Decoder, snap *graph.Snapshot) error {
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
		return jsonDecodeRoutes(dec, &snap.Routes)
	}
	var skip json.RawMessage
	return dec.Decode(&skip)
}

// jsonDecodeRoutes decodes the routes array element by element, interning hop
// names.
func jsonDecodeRoutes(dec *json.Decoder, out *[]graph.Route) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%v", tok), Field: "routes", Offset: dec.InputOffset(),
			Type: reflect.TypeFor[[]graph.Route]()}
	}
	names := make(map[string]string)
	for dec.More() {
		var w jsonWireRoute
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

// jsonWireRoute is what health reads of a route: the key and route addresses
// are not decoded (the estimator pairs a route with its reverse by its
// endpoint hops and the key's port), which spares two address parses per
// key on a document of 100k+ routes.
type jsonWireRoute struct {
	ID   string   `json:"id"`
	Hops []string `json:"hops"`
	Keys []struct {
		SrcPort uint16 `json:"srcPort"`
	} `json:"keys"`
	Metrics graph.Metrics `json:"metrics"`
	Origin  string        `json:"origin"`
}
