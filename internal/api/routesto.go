package api

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/netip"

	"github.com/julienschmidt/httprouter"
)

// routesToRoutes registers GET /v1/mapper/routes-to/:addr: the route each
// source port takes from this host to addr. A peer's pinger asks for it
// every few seconds to learn its reverse routes, so it is cheap to repeat:
// the answer carries an ETag and an unchanged one is a bodyless 304.
func (s *Server) routesToRoutes(r *httprouter.Router) {
	s.get(r, "/v1/mapper/routes-to/:addr", "mapper_routes_to", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if s.deps.MapperRoutesTo == nil {
			writeError(w, http.StatusNotFound, "mapper routes-to not available on this node")
			return
		}
		raw := httprouter.ParamsFromContext(req.Context()).ByName("addr")
		addr, err := netip.ParseAddr(raw)
		if err != nil || addr.Zone() != "" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("routes-to: %q is not an IP address", raw))
			return
		}
		b, err := json.Marshal(s.deps.MapperRoutesTo(addr.Unmap()))
		if err != nil {
			writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
			return
		}
		h := fnv.New64a()
		h.Write(b)
		etag := fmt.Sprintf(`"%016x"`, h.Sum64())
		w.Header().Set("ETag", etag)
		if req.Header.Get("If-None-Match") == etag {
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		writeJSON(w, req, json.RawMessage(b))
	}))
}
