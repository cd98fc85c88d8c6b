package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

//go:embed static
var static embed.FS

// Assets is the page's files (index.html, *.js, *.css) at the root.
func Assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// contentSecurity lets the page load only its own scripts and styles and
// talk only to the node that served it.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page: index.html for "/" and "/ui/", the assets under
// "/ui/<name>". It needs no token: the page holds no data, and every data
// request it makes carries the token itself.
func Handler() http.Handler {
	files := http.FileServerFS(Assets())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurity)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		name := strings.TrimPrefix(r.URL.Path, "/ui")
		if name == "" || name == "/" || name == "/index.html" {
			// FileServer redirects /index.html to ./; serve it directly.
			b, err := fs.ReadFile(Assets(), "index.html")
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			h.Set("Content-Type", "text/html; charset=utf-8")
			if r.Method != http.MethodHead {
				w.Write(b)
			}
			return
		}
		r2 := new(http.Request)
		*r2 = *r
		r2.URL = new(url.URL)
		*r2.URL = *r.URL
		r2.URL.Path = name
		files.ServeHTTP(w, r2)
	})
}

// IsPath reports whether an URL path is the page's (open without a token).
func IsPath(p string) bool { return p == "/" || p == "/ui" || strings.HasPrefix(p, "/ui/") }
