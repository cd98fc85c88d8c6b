package pinger

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnms/dnms/internal/graph"
)

// ReverseIDs says which route a flow's acks take back. With mirrored acks
// the ack of a ping A:S → B returns on B:S → A, the flow B's own mapper
// traces on port S, so the reverse route's id lives in B's route map.
// *Reverse implements it.
type ReverseIDs interface {
	ReverseOf(key graph.RouteKey) (string, bool)
}

// RoutesToPath is the peer API path that lists the peer's route per source
// port towards an address (internal/api routesto.go, mapper.RoutesTo).
const RoutesToPath = "/v1/mapper/routes-to/"

// PeerAPI is how to reach one peer's HTTP API.
type PeerAPI struct {
	URL    string       // base URL, e.g. http://198.18.0.2:12345
	Client *http.Client // nil: a plain client
	Token  string       // when set, sent as Authorization: Bearer
}

// ReverseConfig configures a Reverse. Zero durations take the defaults.
type ReverseConfig struct {
	// Local is this host's probed address: what peers' routes lead to.
	Local netip.Addr
	// Refresh is how often each pinged peer is asked again (an unchanged
	// answer is a bodyless 304). A peer that did not yet know some of the
	// ports asked about is asked again after Refresh/5.
	Refresh time.Duration
	// MaxAge: an answer that could not be refreshed for this long is
	// dropped, and the peer's ports are pinged one by one again.
	MaxAge time.Duration
	// Timeout bounds one request; Parallel bounds requests in flight.
	Timeout  time.Duration
	Parallel int

	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DefaultReverseConfig: ask every 15 s, forget after a minute without an
// answer, 3 s per request, 4 at once.
func DefaultReverseConfig() ReverseConfig {
	return ReverseConfig{Refresh: 15 * time.Second, MaxAge: time.Minute, Timeout: 3 * time.Second, Parallel: 4}
}

// Reverse learns each pinged peer's reverse routes from the peer's API.
// The pinger's questions (ReverseOf) say which peers are pinged: only those
// are asked, so the cost is one small request per pinged peer per Refresh.
type Reverse struct {
	cfg  ReverseConfig
	log  *slog.Logger
	reqs *prometheus.CounterVec

	mu    sync.Mutex
	peers map[netip.Addr]*revPeer
}

type revPeer struct {
	api    PeerAPI
	routes map[uint16]string // nil until the first good answer
	etag   string
	got    time.Time // last good answer (200 or 304)
	tried  time.Time // last request
	next   time.Time // next request due
	asked  time.Time // last ReverseOf about this peer
	missed bool      // ReverseOf asked about a port the answer lacks
	busy   bool
	failed bool // the last request failed (logged once per run of failures)
}

// NewReverse checks cfg and registers dnms_reverse_route_requests_total.
func NewReverse(cfg ReverseConfig) (*Reverse, error) {
	d := DefaultReverseConfig()
	if cfg.Refresh <= 0 {
		cfg.Refresh = d.Refresh
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = d.MaxAge
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = d.Parallel
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reverse{
		cfg: cfg, log: cfg.Logger, peers: make(map[netip.Addr]*revPeer),
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnms_reverse_route_requests_total",
			Help: "Requests to pinged peers for their routes back to this host (their reverse routes), by result: changed, unchanged (304) or error.",
		}, []string{"result"}),
	}
	for _, res := range []string{"changed", "unchanged", "error"} {
		r.reqs.WithLabelValues(res)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(r.reqs); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// SetPeer says where peer's API is (a gossip join or update). Its first
// request is due within a couple of seconds, at a random phase.
func (r *Reverse) SetPeer(peer netip.Addr, api PeerAPI) {
	peer = peer.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.peers[peer]; p != nil {
		if p.api != api {
			p.api, p.etag = api, ""
		}
		return
	}
	r.peers[peer] = &revPeer{api: api, next: time.Now().Add(rand.N(2 * time.Second))}
}

// RemovePeer forgets peer (it left the cluster).
func (r *Reverse) RemovePeer(peer netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.peers, peer.Unmap())
}

// ReverseOf returns the id of the route key's acks take back, when the peer
// said so less than MaxAge ago.
func (r *Reverse) ReverseOf(key graph.RouteKey) (string, bool) {
	return r.reverseAt(key, time.Now())
}

func (r *Reverse) reverseAt(key graph.RouteKey, now time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.peers[key.Dst.Unmap()]
	if p == nil {
		return "", false
	}
	p.asked = now
	if p.routes == nil || now.Sub(p.got) > r.cfg.MaxAge {
		return "", false
	}
	id, ok := p.routes[key.SrcPort]
	if !ok {
		p.missed = true
	}
	return id, ok
}

// Run asks the pinged peers until ctx is done, then returns ctx.Err().
func (r *Reverse) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		r.poll(ctx, time.Now())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// poll sends the requests that are due (Parallel at a time) and waits for
// them. A peer is due when the pinger asked about it lately and its answer
// is Refresh old, or Refresh/5 old and lacking a port the pinger asked
// about.
func (r *Reverse) poll(ctx context.Context, now time.Time) {
	type job struct {
		peer netip.Addr
		api  PeerAPI
		etag string
	}
	var jobs []job
	r.mu.Lock()
	for a, p := range r.peers {
		pinged := !p.asked.IsZero() && now.Sub(p.asked) < 2*r.cfg.Refresh
		due := !now.Before(p.next) || (p.missed && now.Sub(p.tried) >= r.cfg.Refresh/5)
		if !pinged || !due || p.busy {
			continue
		}
		p.busy, p.missed, p.tried = true, false, now
		p.next = now.Add(r.cfg.Refresh)
		jobs = append(jobs, job{a, p.api, p.etag})
	}
	r.mu.Unlock()

	sem := make(chan struct{}, r.cfg.Parallel)
	var wg sync.WaitGroup
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			routes, etag, err := r.fetch(ctx, j.api, j.etag)
			r.done(j.peer, routes, etag, err, now)
		}()
	}
	wg.Wait()
}

// done records one answer: new routes, an unchanged one (routes nil, no
// error) or a failure (the old answer stands until MaxAge).
func (r *Reverse) done(peer netip.Addr, routes map[uint16]string, etag string, err error, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.peers[peer]
	if p == nil {
		return
	}
	p.busy = false
	if err != nil {
		r.reqs.WithLabelValues("error").Inc()
		if !p.failed {
			r.log.Info("reverse routes: the peer did not answer; its ports are pinged one by one once its last answer is a minute old",
				"peer", peer, "err", err)
		}
		p.failed = true
		return
	}
	p.failed = false
	switch {
	case routes == nil:
		r.reqs.WithLabelValues("unchanged").Inc()
		p.got = now
	default:
		r.reqs.WithLabelValues("changed").Inc()
		p.routes, p.etag, p.got = routes, etag, now
	}
}

// fetch asks one peer for its routes to Local: routes nil and no error when
// they did not change since etag.
func (r *Reverse) fetch(ctx context.Context, api PeerAPI, etag string) (map[uint16]string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+RoutesToPath+r.cfg.Local.String(), nil)
	if err != nil {
		return nil, "", err
	}
	if api.Token != "" {
		req.Header.Set("Authorization", "Bearer "+api.Token)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	c := api.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, etag, nil
	case http.StatusOK:
	default:
		return nil, "", fmt.Errorf("%s: %s", req.URL.Path, resp.Status)
	}
	routes, err := decodeRoutesTo(io.LimitReader(resp.Body, 1<<20), r.cfg.Local)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", req.URL.Path, err)
	}
	return routes, resp.Header.Get("ETag"), nil
}

// decodeRoutesTo reads a mapper.RoutesTo document about routes to local.
func decodeRoutesTo(body io.Reader, local netip.Addr) (map[uint16]string, error) {
	var doc struct {
		Peer  netip.Addr `json:"peer"`
		Ports []struct {
			SrcPort uint16 `json:"srcPort"`
			RouteID string `json:"routeId"`
		} `json:"ports"`
	}
	if err := json.NewDecoder(body).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if doc.Peer.Unmap() != local.Unmap() {
		return nil, fmt.Errorf("answer is about %s, not %s", doc.Peer, local)
	}
	routes := make(map[uint16]string, len(doc.Ports))
	for _, p := range doc.Ports {
		if p.RouteID != "" && len(p.RouteID) <= 256 {
			routes[p.SrcPort] = p.RouteID
		}
	}
	return routes, nil
}
