// Package sseid formats and parses dnms SSE event ids, "<instance>-<seq>":
// instance is random per API server start and seq is the graph's event id.
// An id names the process it came from, so a client never resumes into
// another process's graph. The API writes them; the aggregator reads them.
package sseid

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
)

// Format returns "<instance>-<seq>".
func Format(instance string, seq uint64) string {
	return instance + "-" + strconv.FormatUint(seq, 10)
}

// Parse splits an id into instance and seq. The instance is everything
// before the last '-', and must not be empty.
func Parse(v string) (instance string, seq uint64, ok bool) {
	i := strings.LastIndexByte(v, '-')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(v[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return v[:i], seq, true
}

// NewInstance returns a random instance: 64 bits, hex.
func NewInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
