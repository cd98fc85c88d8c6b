// Package probelab runs probe engines inside the namespaces of a lab fabric,
// for the tests and benchmark scripts that need a real engine on a lab host.
package probelab

import (
	"context"
	"errors"
	"fmt"

	"github.com/dnms/dnms/internal/lab"
	"github.com/dnms/dnms/internal/probe"
)

// Start creates a probe engine with cfg inside h's namespace (its sockets
// live there) and runs it until ctx is done. The channel receives Run's
// error once Run returns: nil when ctx ended it.
func Start(ctx context.Context, f *lab.Fabric, h lab.Host, cfg probe.Config) (*probe.Engine, <-chan error, error) {
	var e *probe.Engine
	if err := f.Do(h.NS, func() (err error) { e, err = probe.New(cfg); return err }); err != nil {
		return nil, nil, fmt.Errorf("probe engine on %s: %w", h.Name, err)
	}
	done := make(chan error, 1)
	go func() {
		err := e.Run(ctx)
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		done <- err
	}()
	return e, done, nil
}
