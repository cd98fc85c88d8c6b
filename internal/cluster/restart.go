package cluster

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// A member that restarts faster than failure detection is still alive, at
// its old incarnation, in everyone's view, and a restarted node without
// seeds or state knows no one: nobody would contact it until the next
// push-pull (20-40 s). Acks to memberlist's probes carry the acking
// process's instance, so the prober notices that the member it probed is
// not the process its state describes and joins it: the push-pull tells the
// restarted node every member, and it refutes its stale state with its new
// meta (which reports the restart to every handler).

// rejoinEvery bounds the joins to one restarted member.
const rejoinEvery = 5 * time.Second

type pingDelegate struct {
	c *Cluster

	mu     sync.Mutex
	joined map[string]time.Time // member name -> last join we started
}

var _ memberlist.PingDelegate = (*pingDelegate)(nil)

// AckPayload is this process's instance.
func (d *pingDelegate) AckPayload() []byte {
	return binary.BigEndian.AppendUint64(nil, d.c.local.Instance)
}

// NotifyPingComplete joins other when its ack came from another instance
// than its meta advertises. It runs on memberlist's probe goroutine: the
// join runs on its own.
func (d *pingDelegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, payload []byte) {
	if other == nil || len(payload) != 8 || other.Name == d.c.cfg.NodeName {
		return
	}
	m, err := DecodeMeta(other.Meta)
	if err != nil || m.Instance == 0 || m.Instance == binary.BigEndian.Uint64(payload) {
		return
	}
	d.c.log.Info("member answered as a new process; joining it so that it learns the cluster", "name", other.Name)
	d.rejoin(other.Name, other.Address())
}

// rejoin joins the restarted member name at addr (host:port), at most once
// per rejoinEvery, on a goroutine of its own.
func (d *pingDelegate) rejoin(name, addr string) {
	now := time.Now()
	d.mu.Lock()
	if now.Sub(d.joined[name]) < rejoinEvery {
		d.mu.Unlock()
		return
	}
	d.joined[name] = now
	d.mu.Unlock()
	go func() {
		if _, err := d.c.Join([]string{addr}); err != nil {
			d.c.log.Warn("join restarted member", "name", name, "addr", addr, "err", err)
		}
	}()
}
