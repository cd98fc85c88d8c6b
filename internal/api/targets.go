package api

import (
	"fmt"
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// Targets, paths and service discovery: /v1/targets, /v1/targets/{name},
// /v1/paths and /v1/aggregator/sd. The documents come from
// internal/targets, internal/pathwatch and the aggregator's member list
// through the Deps functions; a nil function answers 404.

// SDGroup is one Prometheus HTTP service discovery target group.
type SDGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

func (s *Server) targetRoutes(r *httprouter.Router) {
	s.get(r, "/v1/targets", "targets", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if s.deps.Targets == nil {
			writeError(w, http.StatusNotFound, "no targets on this node (-targets)")
			return
		}
		writeJSON(w, req, s.deps.Targets())
	}))
	s.get(r, "/v1/targets/:name", "target", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name := httprouter.ParamsFromContext(req.Context()).ByName("name")
		if s.deps.Target == nil {
			writeError(w, http.StatusNotFound, "no targets on this node (-targets)")
			return
		}
		t, ok := s.deps.Target(name)
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no target %q", name))
			return
		}
		writeJSON(w, req, t)
	}))
	s.get(r, "/v1/paths", "paths", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if s.deps.Paths == nil {
			writeError(w, http.StatusNotFound, "no path watch on this node")
			return
		}
		writeJSON(w, req, s.deps.Paths(req.URL.Query().Get("target")))
	}))
	if s.deps.Discovery != nil {
		s.get(r, "/v1/aggregator/sd", "aggregator_sd", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			gs := s.deps.Discovery()
			if gs == nil {
				gs = []SDGroup{}
			}
			writeJSON(w, req, gs)
		}))
	}
}
