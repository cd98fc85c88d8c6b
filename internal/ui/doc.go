// Package ui owns the embedded web page that every agent and the aggregator
// serve at / and /ui/: static assets (HTML, ES modules, CSS) compiled into
// the binary with embed, and the tier layout of the topology (Layout), which
// the API serves as JSON so the page draws the fabric as the Clos it is.
// The page fetches nothing from outside the node that serves it.
package ui
