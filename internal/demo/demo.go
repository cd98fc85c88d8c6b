// Package demo runs real dnms agents on a lab fabric: one process per host
// namespace, one of them the aggregator. It is what `make demo` and the
// end-to-end tests drive, so both exercise the same binary the same way.
package demo

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/lab"
)

// Config says which binary to run where.
type Config struct {
	Binary     string      // path to the dnms binary
	Fabric     *lab.Fabric // a built fabric; the caller owns it
	Aggregator string      // host name that runs -aggregator (default: the first host)
	HTTPPort   int         // every agent's API port (default 12345)
	Args       []string    // extra flags for every agent
	Wrap       []string    // command prefix inside the namespace, e.g. setpriv dropping capabilities
	LogDir     string      // one log file per agent (default: a temp dir)
	Token      string      // when set, every agent runs with -httpToken and the client sends it
	// GossipKey (base64) keys the cluster. With a Token and no GossipKey the
	// agents get a key derived from the token: an open cluster's aggregator
	// sends its token to no member (docs/security.md), so it could not read
	// their graphs.
	GossipKey string
	// AgentArgs, when set, adds flags for one agent, asked at every
	// (re)start: e.g. a -stateDir of its own.
	AgentArgs func(host string) []string
}

// Agent is one dnms process in one host namespace.
type Agent struct {
	Host       lab.Host
	Aggregator bool
	LogPath    string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // how the process ended; valid once done is closed
}

// Cluster is every agent of one fabric.
type Cluster struct {
	cfg    Config
	Agents map[string]*Agent
	order  []string
	client *http.Client
}

// Start starts one agent per host, the aggregator first so it is the seed.
func Start(cfg Config) (*Cluster, error) {
	if cfg.Fabric == nil || len(cfg.Fabric.Hosts) == 0 {
		return nil, errors.New("demo: no fabric hosts")
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 12345
	}
	if cfg.Aggregator == "" {
		cfg.Aggregator = cfg.Fabric.Hosts[0].Name
	}
	if cfg.LogDir == "" {
		d, err := os.MkdirTemp("", "dnms-demo-")
		if err != nil {
			return nil, err
		}
		cfg.LogDir = d
	}
	c := &Cluster{cfg: cfg, Agents: map[string]*Agent{}}
	c.client = &http.Client{Timeout: 5 * time.Second, Transport: bearer{cfg.Token, &http.Transport{
		DialContext:       c.dial,
		DisableKeepAlives: true,
	}}}
	hosts := append([]lab.Host(nil), cfg.Fabric.Hosts...)
	for i, h := range hosts {
		if h.Name == cfg.Aggregator && i != 0 {
			hosts[0], hosts[i] = hosts[i], hosts[0]
		}
	}
	for _, h := range hosts {
		a := &Agent{Host: h, Aggregator: h.Name == cfg.Aggregator, LogPath: filepath.Join(cfg.LogDir, h.Name+".log")}
		c.Agents[h.Name] = a
		c.order = append(c.order, h.Name)
		if err := c.StartAgent(h.Name); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// AggregatorHost is the host that runs the aggregator.
func (c *Cluster) AggregatorHost() lab.Host { return c.Agents[c.cfg.Aggregator].Host }

// LogDir holds one log per agent.
func (c *Cluster) LogDir() string { return c.cfg.LogDir }

func (c *Cluster) args(a *Agent) []string {
	seed := c.AggregatorHost().Addr
	args := []string{
		"-gossipAddr", a.Host.Addr.String(),
		"-httpAddr", net.JoinHostPort(a.Host.Addr.String(), fmt.Sprint(c.cfg.HTTPPort)),
		"-nodeName", a.Host.Name,
	}
	if c.cfg.Token != "" {
		args = append(args, "-httpToken", c.cfg.Token)
	}
	if key := c.gossipKey(); key != "" {
		args = append(args, "-gossipKey", key)
	}
	if a.Aggregator {
		args = append(args, "-aggregator")
	} else {
		args = append(args, "-peer", net.JoinHostPort(seed.String(), "33434"))
	}
	args = append(args, c.cfg.Args...)
	if c.cfg.AgentArgs != nil {
		args = append(args, c.cfg.AgentArgs(a.Host.Name)...)
	}
	return args
}

// gossipKey is the cluster's -gossipKey: the configured one, else with a
// token a 32-byte key derived from it, else none.
func (c *Cluster) gossipKey() string {
	if c.cfg.GossipKey != "" || c.cfg.Token == "" {
		return c.cfg.GossipKey
	}
	sum := sha256.Sum256([]byte("dnms demo gossip key\x00" + c.cfg.Token))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// StartAgent (re)starts the named agent.
func (c *Cluster) StartAgent(name string) error {
	a, ok := c.Agents[name]
	if !ok {
		return fmt.Errorf("demo: no host %q", name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return fmt.Errorf("demo: %s already running", name)
	}
	logf, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	argv := append([]string{"netns", "exec", a.Host.NS}, c.cfg.Wrap...)
	argv = append(append(argv, c.cfg.Binary), c.args(a)...)
	cmd := exec.Command("ip", argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the OS thread that forked the agent exits, not
	// the process: start and wait on one locked thread that lives as long
	// as the agent. Otherwise a goroutine that locks that thread and exits
	// (the lab's real-time delay element does) SIGKILLs the agent.
	started := make(chan error)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the agent
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		a.waitErr = cmd.Wait()
		logf.Close()
		close(done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return fmt.Errorf("start dnms on %s: %w", name, err)
	}
	a.cmd, a.done = cmd, done
	return nil
}

// StopAgent ends the named agent: SIGTERM (clean leave) or SIGKILL (crash),
// and waits for it. After SIGTERM it returns an error unless the agent shut
// down cleanly (exit status 0) within 10 s.
func (c *Cluster) StopAgent(name string, kill bool) error {
	a, ok := c.Agents[name]
	if !ok {
		return fmt.Errorf("demo: no host %q", name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return nil
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-a.cmd.Process.Pid, sig)
	var err error
	select {
	case <-a.done:
		if !kill && a.waitErr != nil {
			err = fmt.Errorf("demo: %s after SIGTERM: %w", name, a.waitErr)
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
		err = fmt.Errorf("demo: %s did not shut down within 10s of SIGTERM", name)
	}
	a.cmd = nil
	return err
}

// Running reports whether the named agent's process is still alive.
func (c *Cluster) Running(name string) bool {
	a := c.Agents[name]
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Stop ends every agent.
func (c *Cluster) Stop() {
	for _, n := range c.order {
		c.StopAgent(n, false)
	}
}

// Tail returns the last n lines of an agent's log, for failure messages.
func (c *Cluster) Tail(name string, n int) string {
	b, _ := os.ReadFile(c.Agents[name].LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// dial opens the TCP connection inside the namespace of the host that owns
// the address, so the test process (in the root namespace) reaches agents
// without any route into the fabric.
func (c *Cluster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ns string
	for _, h := range c.cfg.Fabric.Hosts {
		if h.Addr.String() == host {
			ns = h.NS
		}
	}
	if ns == "" {
		return nil, fmt.Errorf("demo: %s is no lab host", host)
	}
	var conn net.Conn
	err = c.cfg.Fabric.Do(ns, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// bearer adds the API token to every request when there is one.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token == "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// URL is the base URL of the named agent's API.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("http://%s", net.JoinHostPort(c.Agents[name].Host.Addr.String(), fmt.Sprint(c.cfg.HTTPPort)))
}

// GetRaw fetches path from the named agent.
func (c *Cluster) GetRaw(name, path string) ([]byte, error) {
	resp, err := c.client.Get(c.URL(name) + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s on %s: %s: %s", path, name, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// Get fetches path from the named agent and decodes the JSON into v.
func (c *Cluster) Get(name, path string, v any) error {
	body, err := c.GetRaw(name, path)
	if err != nil || v == nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// Health is the aggregator's link ranking.
func (c *Cluster) Health() ([]graph.LinkHealth, error) {
	var rows []graph.LinkHealth
	err := c.Get(c.cfg.Aggregator, "/v1/aggregator/graph/edges/health", &rows)
	return rows, err
}

// Routes is the aggregator's merged route list.
func (c *Cluster) Routes() ([]graph.Route, error) {
	var rs []graph.Route
	err := c.Get(c.cfg.Aggregator, "/v1/aggregator/graph/routes", &rs)
	return rs, err
}

// Coverage is what the aggregator has measured.
type Coverage struct {
	Routes int            // routes at the aggregator
	Pairs  int            // ordered host pairs with a route that qualifies
	Touch  map[string]int // routes from or to each host address
}

// AllPairsMeasured is a WaitFor condition: every ordered pair of the
// fabric's hosts has a route at the aggregator with at least minSamples
// samples (from source, when not "").
func (c *Cluster) AllPairsMeasured(minSamples int, source graph.TimeSource) func() error {
	pairs := len(c.cfg.Fabric.Hosts) * (len(c.cfg.Fabric.Hosts) - 1)
	return func() error {
		cov, err := c.Coverage(minSamples, source)
		if err != nil {
			return err
		}
		if cov.Pairs < pairs {
			return fmt.Errorf("%d of %d host pairs measured at the aggregator (≥ %d samples%s)", cov.Pairs, pairs, minSamples, sourceNote(source))
		}
		return nil
	}
}

func sourceNote(source graph.TimeSource) string {
	if source == "" {
		return ""
	}
	return ", " + string(source) + " stamps"
}

// Coverage counts the ordered host pairs that have a route with at least
// minSamples samples at the aggregator, stamped by source when source is set.
func (c *Cluster) Coverage(minSamples int, source graph.TimeSource) (Coverage, error) {
	rs, err := c.Routes()
	if err != nil {
		return Coverage{}, err
	}
	cov := Coverage{Routes: len(rs), Touch: map[string]int{}}
	seen := map[[2]netip.Addr]bool{}
	for _, r := range rs {
		cov.Touch[r.Src.String()]++
		cov.Touch[r.Dst.String()]++
		if r.Metrics.Samples >= minSamples && (source == "" || r.Metrics.Source == source) {
			seen[[2]netip.Addr{r.Src, r.Dst}] = true
		}
	}
	cov.Pairs = len(seen)
	return cov, nil
}

// Proxy serves the aggregator's API on a local listener (e.g. 127.0.0.1:12345)
// so a person can browse it from the root namespace. It returns when ctx ends.
func (c *Cluster) Proxy(ctx context.Context, ln net.Listener) error {
	target := net.JoinHostPort(c.AggregatorHost().Addr.String(), fmt.Sprint(c.cfg.HTTPPort))
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		in, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer in.Close()
			out, err := c.dial(ctx, "tcp", target)
			if err != nil {
				return
			}
			defer out.Close()
			go io.Copy(out, in)
			io.Copy(in, out)
		}()
	}
}

// WaitFor polls cond every interval until it returns nil or the deadline
// passes; then it returns the last error cond gave.
func WaitFor(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-t.C:
		}
	}
}
