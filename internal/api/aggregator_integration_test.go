//go:build integration

// Cross-package check (go test -tags integration ./internal/api): the real
// aggregator follows this package's event stream over loopback, and the
// merged graph served under /v1/aggregator/... agrees with the agent's. It
// sits behind a tag so that this package's tests do not break while the
// aggregator is being edited.
package api

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/dnms/dnms/internal/aggregator"
	"github.com/dnms/dnms/internal/graph"
)

func TestAggregatorFollowsStream(t *testing.T) {
	agent := fixtureGraph(t)
	merged := graph.New(graph.DefaultConfig())
	cfg := DefaultConfig()
	cfg.Token = "agg-token"
	ts := newTestServer(t, cfg, Deps{Graph: agent, Aggregator: merged})

	acfg := aggregator.DefaultConfig()
	acfg.Token = cfg.Token
	agg, err := aggregator.New(acfg, merged)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	agg.AddMember("h1", ts.URL)

	get := func(path string, v any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	waitFor(t, 30*time.Second, "the aggregator to import the agent's routes", func() bool {
		var s graph.Snapshot
		get("/v1/aggregator/graph", &s)
		return len(s.Routes) == len(agent.Snapshot().Routes)
	})
	var rows []graph.LinkHealth
	get("/v1/aggregator/graph/edges/health", &rows)
	if len(rows) == 0 || rows[0].Src != spine1.String() || rows[0].Dst != leaf2.String() {
		t.Fatalf("aggregator top row %+v, want spine1→leaf2", rows)
	}

	// A live change reaches the aggregator through the stream.
	addPeer(agent, 7)
	want := len(agent.Snapshot().Routes)
	waitFor(t, 30*time.Second, "the new route at the aggregator", func() bool {
		var s graph.Snapshot
		get("/v1/aggregator/graph", &s)
		return len(s.Routes) == want
	})
}
