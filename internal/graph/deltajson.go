package graph

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// A delta batch has a JSON decoder of its own: it is what the aggregator
// reads from every member every interval, and encoding/json's reflection
// costs several times this plain reader on its many small arrays. The
// document is the one encoding/json writes (docs/api.md). The reader is
// stricter than encoding/json: a key may appear once per object, null is
// not an array element, numbers must fit their fields. Whatever it
// accepts, encoding/json reads the same way (FuzzDeltaBatchJSON).

// Buckets are a KeyDelta's encoded buckets (see encodeBucket), written as
// an array of arrays of integers.
type Buckets [][]int64

// MarshalJSON writes the buckets as an array of arrays of integers.
func (bs Buckets) MarshalJSON() ([]byte, error) {
	if bs == nil {
		return []byte("null"), nil
	}
	n := 2
	for _, b := range bs {
		n += 3 + 8*len(b)
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, b := range bs {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, '[')
		for j, v := range b {
			if j > 0 {
				out = append(out, ',')
			}
			out = strconv.AppendInt(out, v, 10)
		}
		out = append(out, ']')
	}
	return append(out, ']'), nil
}

// UnmarshalJSON reads an array of arrays of integers (or null).
func (bs *Buckets) UnmarshalJSON(data []byte) error {
	p := jsonReader{data: data}
	if err := p.buckets(bs); err != nil {
		return err
	}
	return p.end()
}

// UnmarshalJSON reads a delta batch (see the package's reader above).
func (d *DeltaBatch) UnmarshalJSON(data []byte) error {
	p := jsonReader{data: data}
	*d = DeltaBatch{}
	err := p.object([]string{"t0", "routes"}, func(k int) error {
		if k == 0 {
			return p.int64(&d.T0)
		}
		return p.array(func() { d.Routes = []RouteDelta{} }, func() error {
			d.Routes = append(d.Routes, RouteDelta{})
			return p.routeDelta(&d.Routes[len(d.Routes)-1])
		})
	})
	if err != nil {
		return err
	}
	return p.end()
}

func (p *jsonReader) routeDelta(rd *RouteDelta) error {
	return p.object([]string{"id", "full", "w", "j", "src", "hopRttSeconds", "k"}, func(k int) error {
		switch k {
		case 0:
			return p.string(&rd.ID)
		case 1:
			return p.bool(&rd.Full)
		case 2:
			return p.int(&rd.Window)
		case 3:
			return p.float(&rd.Jitter)
		case 4:
			return nullable(p, &rd.Source, func(src *TimeSource) error { return p.string((*string)(src)) })
		case 5:
			return p.array(func() { rd.HopRTTs = []float64{} }, func() error {
				rd.HopRTTs = append(rd.HopRTTs, 0)
				return p.float(&rd.HopRTTs[len(rd.HopRTTs)-1])
			})
		default:
			return p.array(func() { rd.Keys = []KeyDelta{} }, func() error {
				rd.Keys = append(rd.Keys, KeyDelta{})
				return p.keyDelta(&rd.Keys[len(rd.Keys)-1])
			})
		}
	})
}

func (p *jsonReader) keyDelta(kd *KeyDelta) error {
	return p.object([]string{"p", "h", "n", "base", "b"}, func(k int) error {
		switch k {
		case 0:
			v := int64(kd.Port)
			if err := p.int64(&v); err != nil {
				return err
			}
			if v < 0 || v > math.MaxUint16 {
				return p.fail("port out of range")
			}
			kd.Port = uint16(v)
			return nil
		case 1:
			return p.int(&kd.Head)
		case 2:
			return p.int(&kd.Len)
		case 3:
			return nullable(p, &kd.Base, p.float)
		default:
			return p.buckets(&kd.Buckets)
		}
	})
}

// nullable reads a value that may be null into *dst: nil for null, else
// a new value that read fills.
func nullable[T any](p *jsonReader, dst **T, read func(*T) error) error {
	if p.null() {
		*dst = nil
		return nil
	}
	*dst = new(T)
	return read(*dst)
}

// jsonReader reads JSON text from data[i:].
type jsonReader struct {
	data []byte
	i    int
}

func (p *jsonReader) fail(what string) error {
	return fmt.Errorf("delta batch JSON at byte %d: %s", p.i, what)
}

func (p *jsonReader) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c (after spaces) if it is next.
func (p *jsonReader) byte(c byte) bool {
	p.space()
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

// word consumes s (after spaces) if it is next.
func (p *jsonReader) word(s string) bool {
	p.space()
	if len(p.data)-p.i >= len(s) && string(p.data[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *jsonReader) null() bool { return p.word("null") }

func (p *jsonReader) end() error {
	p.space()
	if p.i != len(p.data) {
		return p.fail("trailing data")
	}
	return nil
}

// object reads an object (null: nothing), calling field with the index in
// names of each key it has (ASCII and Unicode case folded, as
// encoding/json matches them); other keys' values are skipped. A key may
// appear once.
func (p *jsonReader) object(names []string, field func(k int) error) error {
	if p.null() {
		return nil
	}
	if !p.byte('{') {
		return p.fail("want an object")
	}
	var seen uint64
	for first := true; ; first = false {
		if p.byte('}') {
			return nil
		}
		if !first && !p.byte(',') {
			return p.fail("want , or }")
		}
		var key string
		if err := p.string(&key); err != nil {
			return err
		}
		if !p.byte(':') {
			return p.fail("want :")
		}
		k := -1
		for j, n := range names {
			if strings.EqualFold(key, n) {
				k = j
			}
		}
		if k < 0 {
			if err := p.skip(); err != nil {
				return err
			}
			continue
		}
		if seen&(1<<k) != 0 {
			return p.fail("key " + names[k] + " twice")
		}
		seen |= 1 << k
		if err := field(k); err != nil {
			return err
		}
	}
}

// array reads an array (null: nothing) whose elements elem reads; start
// runs when it is an array, before the first.
func (p *jsonReader) array(start func(), elem func() error) error {
	if p.null() {
		return nil
	}
	if !p.byte('[') {
		return p.fail("want an array")
	}
	start()
	for first := true; ; first = false {
		if p.byte(']') {
			return nil
		}
		if !first && !p.byte(',') {
			return p.fail("want , or ]")
		}
		if p.null() {
			return p.fail("null element")
		}
		if err := elem(); err != nil {
			return err
		}
	}
}

func (p *jsonReader) buckets(bs *Buckets) error {
	if p.null() {
		*bs = nil
		return nil
	}
	return p.array(func() { *bs = Buckets{} }, func() error {
		b := make([]int64, 0, bucketRTT+8)
		err := p.array(func() {}, func() error {
			var v int64
			err := p.int64(&v)
			b = append(b, v)
			return err
		})
		*bs = append(*bs, b)
		return err
	})
}

// string reads a string (null: nothing). One with escapes or non-ASCII
// bytes goes through encoding/json, which knows every rule.
func (p *jsonReader) string(s *string) error {
	if p.null() {
		return nil
	}
	if !p.byte('"') {
		return p.fail("want a string")
	}
	start, plain := p.i, true
	for ; p.i < len(p.data) && p.data[p.i] != '"'; p.i++ {
		if c := p.data[p.i]; c == '\\' {
			plain = false
			p.i++
		} else if c < 0x20 || c >= 0x80 {
			plain = false
		}
	}
	if p.i >= len(p.data) {
		return p.fail("unterminated string")
	}
	p.i++
	if plain {
		*s = string(p.data[start : p.i-1])
		return nil
	}
	if err := json.Unmarshal(p.data[start-1:p.i], s); err != nil {
		return p.fail(err.Error())
	}
	return nil
}

func (p *jsonReader) bool(b *bool) error {
	switch {
	case p.word("true"):
		*b = true
	case p.word("false"):
		*b = false
	case !p.null():
		return p.fail("want true or false")
	}
	return nil
}

// number is the next number's text.
func (p *jsonReader) number() []byte {
	p.space()
	start := p.i
	for p.i < len(p.data) {
		switch c := p.data[p.i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			p.i++
			continue
		}
		break
	}
	return p.data[start:p.i]
}

// numberOrNull is the next number's text, nil for null.
func (p *jsonReader) numberOrNull() ([]byte, error) {
	if p.null() {
		return nil, nil
	}
	tok := p.number()
	if !validNumber(tok) {
		return nil, p.fail("want a number")
	}
	return tok, nil
}

func (p *jsonReader) float(f *float64) error {
	tok, err := p.numberOrNull()
	if err != nil || tok == nil {
		return err
	}
	v, err := strconv.ParseFloat(string(tok), 64)
	if err != nil {
		return p.fail(err.Error())
	}
	*f = v
	return nil
}

func (p *jsonReader) int(n *int) error {
	v := int64(*n)
	if err := p.int64(&v); err != nil {
		return err
	}
	*n = int(v)
	return nil
}

// int64 reads an integer that fits an int64 (no fraction, no exponent).
func (p *jsonReader) int64(n *int64) error {
	tok, err := p.numberOrNull()
	if err != nil || tok == nil {
		return err
	}
	neg := tok[0] == '-'
	if neg {
		tok = tok[1:]
	}
	var u uint64
	for _, c := range tok {
		if c < '0' || c > '9' {
			return p.fail("want an integer")
		}
		d := uint64(c - '0')
		if u > (math.MaxUint64-d)/10 {
			return p.fail("integer out of range")
		}
		u = u*10 + d
	}
	switch {
	case neg && u <= 1<<63:
		*n = int64(-u)
	case !neg && u <= math.MaxInt64:
		*n = int64(u)
	default:
		return p.fail("integer out of range")
	}
	return nil
}

// validNumber says whether tok is a JSON number.
func validNumber(tok []byte) bool {
	i := 0
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(tok) && tok[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(tok)
}

// skip passes over one value of any kind.
func (p *jsonReader) skip() error {
	p.space()
	if p.i >= len(p.data) {
		return p.fail("want a value")
	}
	switch c := p.data[p.i]; {
	case c == '{':
		return p.object(nil, nil)
	case c == '[':
		return p.array(func() {}, p.skip)
	case c == '"':
		var s string
		return p.string(&s)
	case p.word("true"), p.word("false"), p.null():
		return nil
	default:
		if !validNumber(p.number()) {
			return p.fail("want a value")
		}
		return nil
	}
}
