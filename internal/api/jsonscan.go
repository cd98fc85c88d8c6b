package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonScanner is a small pull scanner over a JSON byte stream, for
// decoders that know the shape of their document (snapdecode.go). It reads
// through its own buffer, hands out strings and numbers as byte slices
// that stay valid until the next call, skips values it is not asked about
// without building them, and names the line and column of any error.
type jsonScanner struct {
	r      io.Reader
	buf    []byte
	pos    int    // next byte to read in buf
	end    int    // buf[pos:end] is unread input
	base   int64  // offset of buf[0] in the stream
	lines  int64  // newlines before buf[0]
	lastNL int64  // offset of the last newline before buf[0], -1 if none
	rerr   error  // the reader's error, once it has returned one
	unesc  []byte // a string with escapes, unescaped
	key    []byte // the member name being read
	// wasArray says whether the last elements call met an array (not null).
	wasArray bool
}

// maxJSONDepth bounds the nesting of skipped values (encoding/json's).
const maxJSONDepth = 10000

// errJSONEOF is an end of input in the middle of a value.
var errJSONEOF = errors.New("malformed JSON: unexpected end of document")

// jsonPosError is a syntax or type error at a position of the document.
type jsonPosError struct {
	line, col int64
	msg       string
}

func (e *jsonPosError) Error() string {
	return fmt.Sprintf("malformed JSON: line %d column %d: %s", e.line, e.col, e.msg)
}

func newJSONScanner(r io.Reader) *jsonScanner {
	return &jsonScanner{r: r, buf: make([]byte, 64<<10), lastNL: -1}
}

// fill reads more input, keeping buf[pos:end]. It returns false at the
// end of the input (or on a read error, kept in rerr).
func (s *jsonScanner) fill() bool {
	if s.rerr != nil {
		return false
	}
	if s.pos > 0 {
		done := s.buf[:s.pos]
		if n := bytes.Count(done, []byte{'\n'}); n > 0 {
			s.lines += int64(n)
			s.lastNL = s.base + int64(bytes.LastIndexByte(done, '\n'))
		}
		s.base += int64(s.pos)
		s.end = copy(s.buf, s.buf[s.pos:s.end])
		s.pos = 0
	}
	if s.end == len(s.buf) {
		s.buf = append(s.buf, make([]byte, len(s.buf))...)
	}
	for {
		n, err := s.r.Read(s.buf[s.end:])
		s.end += n
		if err != nil {
			s.rerr = err
			return n > 0
		}
		if n > 0 {
			return true
		}
	}
}

// errorf is an error at the current position.
func (s *jsonScanner) errorf(format string, args ...any) error {
	done := s.buf[:s.pos]
	line, lastNL := s.lines+1, s.lastNL
	if n := bytes.Count(done, []byte{'\n'}); n > 0 {
		line += int64(n)
		lastNL = s.base + int64(bytes.LastIndexByte(done, '\n'))
	}
	return &jsonPosError{line: line, col: s.base + int64(s.pos) - lastNL, msg: fmt.Sprintf(format, args...)}
}

// eof is the error for input that ends inside a value: a read error if
// the reader failed, else errJSONEOF.
func (s *jsonScanner) eof() error {
	if s.rerr != nil && s.rerr != io.EOF {
		return s.rerr
	}
	return errJSONEOF
}

// peek skips white space and returns the next byte without consuming it;
// ok is false at the end of the input.
func (s *jsonScanner) peek() (c byte, ok bool) {
	for {
		for s.pos < s.end {
			switch c := s.buf[s.pos]; c {
			case ' ', '\t', '\n', '\r':
				s.pos++
			default:
				return c, true
			}
		}
		if !s.fill() {
			return 0, false
		}
	}
}

// next is peek for a byte that must be there.
func (s *jsonScanner) next() (byte, error) {
	c, ok := s.peek()
	if !ok {
		return 0, s.eof()
	}
	return c, nil
}

// expect consumes the byte c, which starts (or, for ':', is part of) a
// value of the field what.
func (s *jsonScanner) expect(c byte, what string) error {
	got, err := s.next()
	if err != nil {
		return err
	}
	if got != c {
		want := map[byte]string{'[': "an array", '{': "an object", '"': "a string", ':': "':' after a member name"}[c]
		return s.errorf("%s: want %s, found %s", what, want, quoteByte(got))
	}
	s.pos++
	return nil
}

func quoteByte(c byte) string {
	if c < ' ' || c >= utf8.RuneSelf {
		return fmt.Sprintf("byte %#02x", c)
	}
	return strconv.QuoteRune(rune(c))
}

// null consumes a null literal if one is next and says whether it did:
// null leaves a field as it is, as encoding/json does.
func (s *jsonScanner) null() (bool, error) {
	c, err := s.next()
	if err != nil || c != 'n' {
		return false, err
	}
	return true, s.literal("null")
}

// literal consumes the literal lit (true, false or null).
func (s *jsonScanner) literal(lit string) error {
	for i := 0; i < len(lit); i++ {
		if s.pos == s.end && !s.fill() {
			return s.eof()
		}
		if s.buf[s.pos] != lit[i] {
			return s.errorf("invalid character %s in literal %s", quoteByte(s.buf[s.pos]), lit)
		}
		s.pos++
	}
	return nil
}

// elements calls each once per element of an array, positioned at the
// element. A null array calls it never.
func (s *jsonScanner) elements(what string, each func() error) error {
	s.wasArray = false
	if null, err := s.null(); null || err != nil {
		return err
	}
	s.wasArray = true
	if err := s.expect('[', what); err != nil {
		return err
	}
	return s.members(']', func() error { return each() })
}

// fields calls each once per member of an object with its key (valid until
// the next scanner call), positioned at the member's value. A null object
// calls it never.
func (s *jsonScanner) fields(what string, each func(key []byte) error) error {
	if null, err := s.null(); null || err != nil {
		return err
	}
	if err := s.expect('{', what); err != nil {
		return err
	}
	return s.members('}', func() error {
		key, err := s.str(what)
		if err != nil {
			return err
		}
		// Copied: reading on may move the buffer under key. (each
		// reads key before it reads on.)
		s.key = append(s.key[:0], key...)
		key = s.key
		if err := s.expect(':', what); err != nil {
			return err
		}
		return each(key)
	})
}

// members reads comma-separated items up to the closing byte.
func (s *jsonScanner) members(closing byte, item func() error) error {
	c, err := s.next()
	if err != nil {
		return err
	}
	if c == closing {
		s.pos++
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		c, err := s.next()
		if err != nil {
			return err
		}
		s.pos++
		switch c {
		case ',':
		case closing:
			return nil
		default:
			s.pos--
			return s.errorf("want ',' or %q, found %s", closing, quoteByte(c))
		}
	}
}

// ensure makes n unread bytes available, if the input has them.
func (s *jsonScanner) ensure(n int) bool {
	for s.end-s.pos < n {
		if !s.fill() {
			return false
		}
	}
	return true
}

// str reads a string. The bytes are valid until the next scanner call.
// Invalid UTF-8 becomes U+FFFD, as with encoding/json.
func (s *jsonScanner) str(what string) ([]byte, error) {
	if err := s.expect('"', what); err != nil {
		return nil, err
	}
	for i := s.pos; i < s.end; i++ { // the common case: plain ASCII, all buffered
		switch c := s.buf[i]; {
		case c == '"':
			v := s.buf[s.pos:i]
			s.pos = i + 1
			return v, nil
		case c == '\\' || c < ' ' || c >= utf8.RuneSelf:
			i = s.end
		}
	}
	return s.strSlow()
}

// strSlow reads the rest of a string byte by byte into s.unesc.
func (s *jsonScanner) strSlow() ([]byte, error) {
	s.unesc = s.unesc[:0]
	ascii := true
	for {
		if s.pos == s.end && !s.fill() {
			return nil, s.eof()
		}
		c := s.buf[s.pos]
		switch {
		case c == '"':
			s.pos++
			if !ascii && !utf8.Valid(s.unesc) {
				s.unesc = validUTF8(s.unesc)
			}
			return s.unesc, nil
		case c == '\\':
			if err := s.escape(); err != nil {
				return nil, err
			}
			continue
		case c < ' ':
			return nil, s.errorf("invalid control character %s in string", quoteByte(c))
		case c >= utf8.RuneSelf:
			ascii = false
		}
		s.unesc = append(s.unesc, c)
		s.pos++
	}
}

// escape decodes one backslash escape into s.unesc. A \u escape of a lone
// surrogate becomes U+FFFD, as with encoding/json.
func (s *jsonScanner) escape() error {
	if !s.ensure(2) {
		return s.eof()
	}
	c := s.buf[s.pos+1]
	if c != 'u' {
		i := strings.IndexByte(`"\/bfnrt`, c)
		if i < 0 {
			s.pos++
			return s.errorf("invalid escape %s in string", quoteByte(c))
		}
		s.unesc = append(s.unesc, "\"\\/\b\f\n\r\t"[i])
		s.pos += 2
		return nil
	}
	r, err := s.hex4()
	if err != nil {
		return err
	}
	if utf16.IsSurrogate(r) {
		hi := r
		r = utf8.RuneError
		if s.ensure(6) && s.buf[s.pos] == '\\' && s.buf[s.pos+1] == 'u' {
			save := s.pos
			lo, err := s.hex4()
			if d := utf16.DecodeRune(hi, lo); err == nil && d != utf8.RuneError {
				r = d
			} else {
				s.pos = save // not a low surrogate: it is decoded on its own
			}
		}
	}
	s.unesc = utf8.AppendRune(s.unesc, r)
	return nil
}

// hex4 decodes the escape \uXXXX at the current position.
func (s *jsonScanner) hex4() (rune, error) {
	if !s.ensure(6) {
		return 0, s.eof()
	}
	var r rune
	for i := 2; i < 6; i++ {
		c := s.buf[s.pos+i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			s.pos += i
			return 0, s.errorf("invalid character %s in \\u escape", quoteByte(c))
		}
		r = r<<4 | rune(d)
	}
	s.pos += 6
	return r, nil
}

// validUTF8 replaces each byte of an invalid UTF-8 sequence with U+FFFD,
// as encoding/json does.
func validUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

// number reads a number and returns its text, checked against the JSON
// grammar.
func (s *jsonScanner) number() ([]byte, error) {
	n := 0
	for {
		for n < s.end-s.pos && isNumByte(s.buf[s.pos+n]) {
			n++
		}
		if n < s.end-s.pos || !s.fill() {
			break
		}
	}
	tok := s.buf[s.pos : s.pos+n]
	if bad := numberSyntax(tok); bad >= 0 {
		s.pos += bad
		if bad == len(tok) && s.pos == s.end {
			return nil, s.eof()
		}
		c := byte(' ')
		if s.pos < s.end {
			c = s.buf[s.pos]
		}
		return nil, s.errorf("invalid character %s in number", quoteByte(c))
	}
	s.pos += n
	return tok, nil
}

func isNumByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// numberSyntax returns the index of the first byte of tok that breaks the
// JSON number grammar (len(tok) if it ends too early), or -1.
func numberSyntax(tok []byte) int {
	i := 0
	digits := func() bool {
		j := i
		for i < len(tok) && '0' <= tok[i] && tok[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	switch {
	case i < len(tok) && tok[i] == '0':
		i++
	case !digits():
		return i
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		if !digits() {
			return i
		}
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		if !digits() {
			return i
		}
	}
	if i < len(tok) {
		return i
	}
	return -1
}

// float reads a number as a float64.
func (s *jsonScanner) float(what string) (float64, error) {
	tok, err := s.numberOf(what)
	if err != nil {
		return 0, err
	}
	if len(tok) <= 15 && tok[0] != '-' {
		if v, ok := smallUint(tok); ok { // exact: fewer than 2^53
			return float64(v), nil
		}
	}
	v, err := strconv.ParseFloat(string(tok), 64)
	if err != nil {
		return 0, s.errorf("%s: number %s out of range", what, tok)
	}
	return v, nil
}

// integer reads a number that must be an integer in [lo, hi].
func (s *jsonScanner) integer(what string, lo, hi int64) (int64, error) {
	tok, err := s.numberOf(what)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, s.errorf("%s: number %s is not an integer in [%d, %d]", what, tok, lo, hi)
	}
	return n, nil
}

// uint64 reads a number that must be an integer in [0, 2^64).
func (s *jsonScanner) uint64(what string) (uint64, error) {
	tok, err := s.numberOf(what)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(tok), 10, 64)
	if err != nil {
		return 0, s.errorf("%s: number %s is not an unsigned 64-bit integer", what, tok)
	}
	return n, nil
}

// numberOf reads a number where the field what wants one.
func (s *jsonScanner) numberOf(what string) ([]byte, error) {
	c, err := s.next()
	if err != nil {
		return nil, err
	}
	if c != '-' && (c < '0' || c > '9') {
		return nil, s.errorf("%s: want a number, found %s", what, quoteByte(c))
	}
	return s.number()
}

// smallUint parses plain decimal digits below 10^18.
func smallUint(tok []byte) (uint64, bool) {
	if len(tok) == 0 || len(tok) > 18 {
		return 0, false
	}
	var v uint64
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// skip reads any one value without keeping it.
func (s *jsonScanner) skip(depth int) error {
	if depth > maxJSONDepth {
		return s.errorf("exceeded max depth")
	}
	c, err := s.next()
	if err != nil {
		return err
	}
	switch c {
	case '{':
		return s.fields("value", func([]byte) error { return s.skip(depth + 1) })
	case '[':
		return s.elements("value", func() error { return s.skip(depth + 1) })
	case '"':
		_, err := s.str("value")
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	if c == '-' || '0' <= c && c <= '9' {
		_, err := s.number()
		return err
	}
	return s.errorf("invalid character %s looking for beginning of value", quoteByte(c))
}
