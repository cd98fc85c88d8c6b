package pathwatch

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// stateVersion is bumped when the file's shape changes; a file of another
// version is ignored (logged), never half-read.
const stateVersion = 1

const stateFile = "paths.json"

type stateHop struct {
	Hop
	RTTs []float64 `json:"rtts,omitempty"`
}

type statePath struct {
	Path
	Hops []stateHop `json:"hops"`
}

type stateFlow struct {
	Flow    Flow        `json:"flow"`
	Current string      `json:"current"`
	Paths   []statePath `json:"paths"`
	Changes []Change    `json:"changes"`
}

type state struct {
	Version int         `json:"version"`
	Flows   []stateFlow `json:"flows"`
}

// Close writes the history one last time (with a StateDir).
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dirty = true
	return w.saveLocked()
}

// saveLocked writes the history to StateDir atomically when it changed.
func (w *Watcher) saveLocked() error {
	if w.cfg.StateDir == "" || !w.dirty {
		return nil
	}
	st := state{Version: stateVersion}
	for _, fs := range w.flows {
		sf := stateFlow{Flow: fs.flow, Current: fs.current}
		for _, p := range fs.paths {
			sp := statePath{Path: *p}
			for _, h := range p.Hops {
				sp.Hops = append(sp.Hops, stateHop{Hop: h, RTTs: h.rtts})
			}
			sf.Paths = append(sf.Paths, sp)
		}
		for _, c := range fs.changes {
			sf.Changes = append(sf.Changes, *c)
		}
		st.Flows = append(st.Flows, sf)
	}
	b, err := json.Marshal(st)
	if err == nil {
		err = writeAtomic(filepath.Join(w.cfg.StateDir, stateFile), b)
	}
	if err != nil {
		w.saveErrors.Inc()
		w.log.Warn("path history not saved", "dir", w.cfg.StateDir, "err", err)
		return err
	}
	w.dirty = false
	return nil
}

// writeAtomic writes b to a temporary file next to name, syncs it and
// renames it over name, so a reader sees the old or the new file, whole.
func writeAtomic(name string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// load reads the saved history. A missing file is an empty history; an
// unreadable one is an error (the operator pointed -stateDir at it).
func (w *Watcher) load() error {
	name := filepath.Join(w.cfg.StateDir, stateFile)
	b, err := os.ReadFile(name)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pathwatch: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("pathwatch: %s: %w", name, err)
	}
	if st.Version != stateVersion {
		w.log.Warn("path history of another version ignored", "file", name, "version", st.Version)
		return nil
	}
	for _, sf := range st.Flows {
		fs := &flowState{flow: sf.Flow, current: sf.Current, paths: map[string]*Path{}}
		for _, sp := range sf.Paths {
			p := sp.Path
			p.Hops = nil
			for _, sh := range sp.Hops {
				h := sh.Hop
				h.rtts = sh.RTTs
				if len(h.rtts) > w.cfg.HopSamples {
					h.rtts = h.rtts[len(h.rtts)-w.cfg.HopSamples:]
				}
				p.Hops = append(p.Hops, h)
			}
			fs.paths[p.ID] = &p
		}
		if fs.paths[fs.current] == nil {
			fs.current = ""
		}
		for i := range sf.Changes {
			c := sf.Changes[i]
			c.counted = true // counted by the process that saw it
			if c.Verdict.Pending {
				c.Verdict.Pending = false // its window is gone with that process
			}
			fs.changes = append(fs.changes, &c)
		}
		if len(fs.changes) > w.cfg.History {
			fs.changes = fs.changes[len(fs.changes)-w.cfg.History:]
		}
		w.trimPaths(fs, fs.current)
		w.flows[fs.flow] = fs
	}
	return nil
}
