package api

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// GET /v1/mapper/routes-to/{addr}: the document for that peer with an
// ETag, a bodyless 304 when the caller already has it, a one-line 400 for
// an address that is not one, and 404 where there is no mapper.
func TestRoutesTo(t *testing.T) {
	var asked netip.Addr
	doc := map[string]any{"peer": "198.18.0.2", "ports": []int{1}}
	h := newHandler(t, DefaultConfig(), Deps{
		Graph: fixtureGraph(t),
		MapperRoutesTo: func(a netip.Addr) any {
			asked = a
			return doc
		},
	})
	get := func(path, etag string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	rec := get("/v1/mapper/routes-to/::ffff:198.18.0.2", "")
	etag := rec.Header().Get("ETag")
	if rec.Code != http.StatusOK || etag == "" || !strings.Contains(rec.Body.String(), `"198.18.0.2"`) {
		t.Fatalf("GET: %d etag %q body %s", rec.Code, etag, rec.Body)
	}
	if asked != netip.MustParseAddr("198.18.0.2") {
		t.Errorf("mapper asked about %s, want the unmapped 198.18.0.2", asked)
	}
	if rec := get("/v1/mapper/routes-to/198.18.0.2", etag); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Errorf("same ETag: %d %q, want 304 without a body", rec.Code, rec.Body)
	}
	doc["ports"] = []int{1, 2}
	if rec := get("/v1/mapper/routes-to/198.18.0.2", etag); rec.Code != http.StatusOK || rec.Header().Get("ETag") == etag {
		t.Errorf("changed document: %d etag %q (was %q), want 200 and a new ETag", rec.Code, rec.Header().Get("ETag"), etag)
	}
	if rec := get("/v1/mapper/routes-to/leaf1", ""); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "not an IP address") {
		t.Errorf("bad address: %d %s", rec.Code, rec.Body)
	}

	h = newHandler(t, DefaultConfig(), Deps{Graph: fixtureGraph(t)})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/mapper/routes-to/198.18.0.2", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("no mapper: %d, want 404", rec.Code)
	}
}
