package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/localize"
	"github.com/dnms/dnms/internal/plan"
	"github.com/dnms/dnms/internal/ui"
)

// normSnapshot makes nil slices empty so the JSON says [] rather than null.
func normSnapshot(s graph.Snapshot) graph.Snapshot {
	s.Nodes = orEmpty(s.Nodes)
	s.Links = orEmpty(s.Links)
	s.Routes = orEmpty(s.Routes)
	return s
}

// viewer is a graph that serves its snapshot from a cache (*graph.Graph):
// one copy per graph change, shared by every request and scrape.
type viewer interface {
	SnapshotView() *graph.Snapshot
}

// snapshotOf is g's snapshot, shared with other readers when g caches it:
// handlers read it and must not modify it or any slice in it.
func snapshotOf(g Graph) graph.Snapshot {
	if v, ok := g.(viewer); ok {
		return *v.SnapshotView()
	}
	return g.Snapshot()
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) graphHandler(g Graph) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, normSnapshot(snapshotOf(g)))
	})
}

func (s *Server) nodesHandler(g Graph) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, orEmpty(snapshotOf(g).Nodes))
	})
}

func (s *Server) edgesHandler(g Graph) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, edgesWithCoverage(snapshotOf(g)))
	})
}

// edge is one /edges row: the link, and how many distinct hosts' routes
// cross it (plan.Coverage; the link's routes are already in graph.Link).
type edge struct {
	graph.Link
	Sources int `json:"sources"`
}

func edgesWithCoverage(snap graph.Snapshot) []edge {
	cov := plan.LinkCoverage(snap.Routes)
	out := make([]edge, len(snap.Links))
	for i, l := range snap.Links {
		out[i] = edge{Link: l, Sources: cov[l.LinkID].Sources}
	}
	return out
}

// routesHandler serves the routes, optionally only those from ?src= and/or
// to ?dst= (addresses).
func (s *Server) routesHandler(g Graph) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var src, dst netip.Addr
		for _, f := range []struct {
			name string
			addr *netip.Addr
		}{{"src", &src}, {"dst", &dst}} {
			if v := q.Get(f.name); v != "" {
				a, err := netip.ParseAddr(v)
				if err != nil {
					writeError(w, http.StatusBadRequest, fmt.Sprintf("%s=%q: not an IP address", f.name, v))
					return
				}
				*f.addr = a.Unmap()
			}
		}
		routes := snapshotOf(g).Routes
		if src.IsValid() || dst.IsValid() {
			var kept []graph.Route // the snapshot is shared: filter into a new slice
			for _, rt := range routes {
				if (!src.IsValid() || rt.Src == src) && (!dst.IsValid() || rt.Dst == dst) {
					kept = append(kept, rt)
				}
			}
			routes = kept
		}
		writeJSON(w, r, orEmpty(routes))
	})
}

// layoutHandler serves the tier layout of the graph for the web page.
func (s *Server) layoutHandler(g Graph) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, ui.ComputeLayout(snapshotOf(g)))
	})
}

// healthHandler serves the link health rows, by seed suspicion or, with
// ?sort=estimate, by verdict then estimated loss and delay; ?top=N keeps the
// first N.
func (s *Server) healthHandler(g Graph) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		top := 0
		if v := r.URL.Query().Get("top"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("top=%q: want a non-negative integer", v))
				return
			}
			top = n
		}
		order := r.URL.Query().Get("sort")
		if order != "" && order != "suspicion" && order != "estimate" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("sort=%q: want suspicion or estimate", order))
			return
		}
		rows := g.Health()
		if order == "estimate" {
			localize.SortByEstimate(rows)
		}
		if top > 0 && len(rows) > top {
			rows = rows[:top]
		}
		writeJSON(w, r, orEmpty(rows))
	})
}

func (s *Server) mapperHandler(what string, fn func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fn == nil {
			writeError(w, http.StatusNotFound, "mapper "+what+" not available on this node")
			return
		}
		writeJSON(w, r, fn())
	})
}

// healthz is always open (no token): liveness plus whatever Deps.Meta says.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{
		"status":        "ok",
		"time":          time.Now().UTC().Format(time.RFC3339Nano),
		"uptimeSeconds": time.Since(s.started).Seconds(),
		"aggregator":    s.deps.Aggregator != nil,
		"auth":          s.cfg.Token != "",
	}
	if s.deps.Meta != nil {
		if m := s.deps.Meta(); m != nil {
			mergeMeta(out, m)
		}
	}
	writeJSON(w, r, out)
}

// mergeMeta merges a JSON object's fields into out without overriding the
// fixed ones; any other JSON value goes under "meta".
func mergeMeta(out map[string]any, m any) {
	b, err := json.Marshal(m)
	if err != nil {
		out["metaError"] = err.Error()
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil || obj == nil {
		out["meta"] = json.RawMessage(b)
		return
	}
	for k, v := range obj {
		if _, fixed := out[k]; !fixed {
			out[k] = v
		}
	}
}

func (s *Server) metricsHandler() http.Handler {
	h := promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog:      promErrorLog{s},
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       s.cfg.WriteTimeout,
	})
	return newQueue(s.cfg.MaxScrapes, s.cfg.ScrapeQueueWait).wrap(h, s.metrics.scrapesRejected.Inc)
}

type promErrorLog struct{ s *Server }

func (l promErrorLog) Println(v ...any) { l.s.log.Warn("metrics gather", "err", v) }
