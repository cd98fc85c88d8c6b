package aggregator

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// sseEvent is one dispatched server-sent event.
type sseEvent struct {
	Name  string // "message" when the stream named none
	ID    string // value of this event's id field
	HasID bool   // the event carried an id field
	Data  []byte
	// Broken: part of the event was dropped (an over-long line), so its data
	// cannot be trusted.
	Broken bool
}

// sseReader parses the text/event-stream format (WHATWG HTML §9.2) from an
// untrusted peer: lines end in LF or CRLF, a blank line dispatches, lines
// starting with ':' are comments, fields are event, data, id and retry.
// Anything else is counted as garbage and ignored. Every line, and the data
// of one event, is bounded by max bytes.
type sseReader struct {
	r   *bufio.Reader
	max int

	line []byte
	// Current event being built.
	name   []byte
	data   []byte
	id     []byte
	hasID  bool
	broken bool
	first  bool

	// Counters the caller reads after each Next.
	Comments int
	Garbage  int
	Overlong int
	// OnLine, if set, is called for every line read (idle watchdog).
	OnLine func()
}

var errLineTooLong = errors.New("sse line too long")

func newSSEReader(r io.Reader, max int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 64<<10), max: max, first: true}
}

// readLine returns the next line without its terminator. A line longer than
// max is consumed and reported as errLineTooLong. A partial line at EOF is
// dropped (an unterminated event is never dispatched).
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	tooLong := false
	for {
		chunk, err := s.r.ReadSlice('\n')
		if !tooLong {
			if len(s.line)+len(chunk) > s.max+2 { // +2: the CRLF itself
				tooLong = true
				s.line = s.line[:0]
			} else {
				s.line = append(s.line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if s.OnLine != nil {
			s.OnLine()
		}
		if tooLong {
			return nil, errLineTooLong
		}
		l := bytes.TrimSuffix(s.line[:len(s.line)-1], []byte{'\r'})
		if s.first {
			s.first = false
			l = bytes.TrimPrefix(l, []byte("\xef\xbb\xbf")) // BOM
		}
		return l, nil
	}
}

// Next returns the next dispatched event, or the read error (io.EOF when
// the stream ended).
func (s *sseReader) Next() (sseEvent, error) {
	for {
		line, err := s.readLine()
		if errors.Is(err, errLineTooLong) {
			s.Overlong++
			s.broken = true
			continue
		}
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if len(s.data) == 0 && !s.broken {
				s.reset()
				continue
			}
			ev := sseEvent{
				Name:   string(s.name),
				ID:     string(s.id),
				HasID:  s.hasID,
				Data:   bytes.Clone(bytes.TrimSuffix(s.data, []byte{'\n'})),
				Broken: s.broken,
			}
			if ev.Name == "" {
				ev.Name = "message"
			}
			s.reset()
			return ev, nil
		}
		if line[0] == ':' {
			s.Comments++
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte{' '})
		}
		switch string(field) {
		case "event":
			s.name = append(s.name[:0], value...)
		case "data":
			if len(s.data)+len(value)+1 > s.max {
				s.Overlong++
				s.broken = true
				continue
			}
			s.data = append(s.data, value...)
			s.data = append(s.data, '\n')
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				s.id = append(s.id[:0], value...)
				s.hasID = true
			}
		case "retry":
			// We back off on our own schedule.
		default:
			s.Garbage++
		}
	}
}

func (s *sseReader) reset() {
	s.name = s.name[:0]
	s.data = s.data[:0]
	s.id = s.id[:0]
	s.hasID = false
	s.broken = false
}
