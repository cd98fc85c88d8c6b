package api

import (
	"fmt"
	"net"
	"net/http"

	"github.com/prometheus/exporter-toolkit/web"
)

// serve runs srv on ln: through the exporter-toolkit web config when one is
// set (TLS, client CA, basic auth, the format Prometheus users write), else
// with the cluster TLS config when set, else plain HTTP.
func (s *Server) serve(srv *http.Server, ln net.Listener) error {
	switch {
	case s.cfg.WebConfigFile != "":
		file := s.cfg.WebConfigFile
		return web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &file}, s.log)
	case s.cfg.TLS != nil:
		srv.TLSConfig = s.cfg.TLS
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// ValidateWebConfig checks a -web.config.file before anything starts.
func ValidateWebConfig(file string) error {
	if err := web.Validate(file); err != nil {
		return fmt.Errorf("-web.config.file %s: %w", file, err)
	}
	return nil
}
