package api

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// readHealthDoc decodes one graph document as a stream (snapDecoder):
// only the fields health reads are kept and each route is checked and
// turned into estimator input as it is read, so a saved graph of a large
// fabric is never held twice (bytes and values) in memory.
func readHealthDoc(r io.Reader) (healthDoc, error) {
	cr := &countingReader{r: io.LimitReader(r, maxHealthInput+1)}
	d := newSnapDecoder(cr)
	if f, ok := r.(*os.File); ok {
		// A saved graph has a route per ~540 bytes: reserve the input for
		// one per 256 so it is made once, not in chunks joined at the end.
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			d.reserve = int(min(st.Size(), maxHealthInput) / 256)
		}
	}
	doc, err := d.decode()
	if cr.n > maxHealthInput {
		return doc, fmt.Errorf("larger than %d MiB", maxHealthInput>>20)
	}
	if err != nil {
		return doc, err
	}
	if doc.routes == 0 {
		return doc, errors.New("no routes in the document: is it a /v1/graph or /v1/aggregator/graph document?")
	}
	return doc, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
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
