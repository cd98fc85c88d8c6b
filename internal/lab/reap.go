package lab

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Fabrics built by New (tests) record their owner's PID here, so that a
// later New can delete fabrics whose test process died without cleaning up
// (killed, or `go test -timeout` expired: t.Cleanup does not run then).
// Fabrics built by the CLI have no owner file and are never reaped.
const ownerDir = "/run/dnms-lab"

func ownerFile(prefix string) string { return filepath.Join(ownerDir, prefix+".pid") }

func recordOwner(prefix string) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("lab: owner dir: %w", err)
	}
	return os.WriteFile(ownerFile(prefix), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

func forgetOwner(prefix string) { _ = os.Remove(ownerFile(prefix)) }

// ReapStale deletes the fabrics built by New in processes that no longer
// exist, and returns their prefixes.
func ReapStale() ([]string, error) {
	ents, err := os.ReadDir(ownerDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: reap: %w", err)
	}
	var reaped []string
	var errs []error
	for _, e := range ents {
		prefix, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(ownerDir, e.Name()))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // owner alive
		}
		if err := Destroy(prefix); err != nil {
			errs = append(errs, err)
			continue
		}
		forgetOwner(prefix)
		reaped = append(reaped, prefix)
	}
	return reaped, errors.Join(errs...)
}

// live holds the fabrics built by New in this process, for the signal
// handler: an interrupted `go test` (Ctrl-C, SIGTERM from CI) still
// deletes its namespaces.
var live struct {
	sync.Mutex
	fabrics map[*Fabric]struct{}
	once    sync.Once
}

func track(f *Fabric) {
	live.Lock()
	if live.fabrics == nil {
		live.fabrics = map[*Fabric]struct{}{}
	}
	live.fabrics[f] = struct{}{}
	live.Unlock()
	live.once.Do(func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		go func() {
			s := <-c
			live.Lock()
			fs := make([]*Fabric, 0, len(live.fabrics))
			for f := range live.fabrics {
				fs = append(fs, f)
			}
			live.Unlock()
			for _, f := range fs {
				_ = f.Close()
			}
			fmt.Fprintf(os.Stderr, "lab: %v: deleted %d fabric(s)\n", s, len(fs))
			// Exit rather than re-raise: a signal ignored at exec (background
			// jobs ignore SIGINT) would stay ignored after signal.Reset.
			os.Exit(1)
		}()
	})
}

func untrack(f *Fabric) {
	live.Lock()
	delete(live.fabrics, f)
	live.Unlock()
}
