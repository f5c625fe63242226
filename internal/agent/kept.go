package agent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// Detached jobs (hac run -d) run without their client. The node keeps
// what the client would have had: the program's output (the last
// Config.JobOutputBytes of it) from the start, and its workspace after
// the end, for Config.JobRetention. Each lives in DataDir/kept/JOB:
// output.N (outputLog), manifest.pb (what the client uploaded, to tell
// what the program changed), work/ (the workspace, once the job ended)
// and end.json (how it ended). An agent restart keeps what ended and
// marks what ran as ended with the agent.

const (
	// DefaultJobOutputBytes is how much of a detached job's output a node
	// keeps: the last 64 MiB.
	DefaultJobOutputBytes = 64 << 20
	// DefaultJobRetention is how long a node keeps a detached job's output
	// and files after it ended.
	DefaultJobRetention = 24 * time.Hour
)

// keptJob is a detached job's output and files on this node.
type keptJob struct {
	id  int64
	dir string
	log *outputLog

	mu       sync.Mutex
	run      *jobRun // nil once the program ended
	work     string  // the workspace: the job's folder while it runs, dir/work after
	manifest *hacv1.Manifest
	end      *keptEnd // nil while it runs
}

// keptEnd is how a detached job ended (end.json).
type keptEnd struct {
	ExitCode int32     `json:"exit_code"`
	Signal   int32     `json:"signal,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
	Dropped  int64     `json:"dropped,omitempty"`
}

func (a *Agent) keptDir() string { return filepath.Join(a.cfg.DataDir, "kept") }

// keep starts the record of a detached job about to run in work.
func (a *Agent) keep(run *jobRun, m *hacv1.Manifest, work string) (*keptJob, error) {
	dir := filepath.Join(a.keptDir(), strconv.FormatInt(run.id, 10))
	os.RemoveAll(dir) // a job id is granted once; this is a retry's leftover
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	raw, err := proto.Marshal(m)
	if err == nil {
		err = writeFileSync(filepath.Join(dir, "manifest.pb"), raw)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	log, err := newOutputLog(dir, a.cfg.JobOutputBytes)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	k := &keptJob{id: run.id, dir: dir, log: log, run: run, work: work, manifest: m}
	a.mu.Lock()
	a.kept[run.id] = k
	a.mu.Unlock()
	return k, nil
}

// ended records the program's end: the workspace moves into the record
// (the job's own folder goes with the job) and followers hear the end.
func (k *keptJob) ended(e keptEnd) error {
	_, _, dropped, _, _ := k.log.state()
	e.Dropped = dropped
	var err error
	k.mu.Lock()
	kept := filepath.Join(k.dir, "work")
	if err = os.Rename(k.work, kept); err == nil {
		k.work = kept
	}
	k.run, k.end = nil, &e
	k.mu.Unlock()
	if raw, jerr := json.Marshal(e); jerr == nil {
		err = errors.Join(err, writeFileSync(filepath.Join(k.dir, "end.json"), raw))
	}
	k.log.close()
	return err
}

// state returns the job's running program (nil once it ended), its
// workspace and its end.
func (k *keptJob) state() (*jobRun, string, *keptEnd) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.run, k.work, k.end
}

// uploaded returns what the client uploaded, read back after a restart.
func (k *keptJob) uploaded() (*hacv1.Manifest, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.manifest != nil {
		return k.manifest, nil
	}
	raw, err := os.ReadFile(filepath.Join(k.dir, "manifest.pb"))
	if err != nil {
		return nil, err
	}
	m := &hacv1.Manifest{}
	if err := proto.Unmarshal(raw, m); err != nil {
		return nil, err
	}
	k.manifest = m
	return m, nil
}

// exited is the end as the Output stream says it.
func (e *keptEnd) exited() *hacv1.Exited {
	return &hacv1.Exited{ExitCode: e.ExitCode, Signal: e.Signal, Reason: e.Reason}
}

// loadKept reads back the records an earlier agent left: those that
// ended stay until their retention ends; one whose program still ran
// ended with that agent (its workspace went with the job's folder).
func (a *Agent) loadKept() error {
	if err := os.MkdirAll(a.keptDir(), 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(a.keptDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		id, err := strconv.ParseInt(e.Name(), 10, 64)
		dir := filepath.Join(a.keptDir(), e.Name())
		if err != nil || id <= 0 {
			os.RemoveAll(dir)
			continue
		}
		var end keptEnd
		raw, err := os.ReadFile(filepath.Join(dir, "end.json"))
		if err != nil || json.Unmarshal(raw, &end) != nil {
			fi, err := e.Info()
			if err != nil {
				continue
			}
			end = keptEnd{ExitCode: 137, Reason: "the node agent stopped while it ran", At: fi.ModTime()}
			if raw, err := json.Marshal(end); err == nil {
				writeFileSync(filepath.Join(dir, "end.json"), raw)
			}
		}
		a.kept[id] = &keptJob{id: id, dir: dir, log: openOutputLog(dir, end.Dropped), work: filepath.Join(dir, "work"), end: &end}
	}
	return nil
}

// keptJob returns a detached job's record, nil when there is none (any
// more).
func (a *Agent) keptJob(id int64) *keptJob {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.kept[id]
}

// expireKept removes the records whose retention ended.
func (a *Agent) expireKept(now time.Time) {
	a.mu.Lock()
	var gone []*keptJob
	for id, k := range a.kept {
		if _, _, end := k.state(); end != nil && now.Sub(end.At) > a.cfg.JobRetention {
			delete(a.kept, id)
			gone = append(gone, k)
		}
	}
	a.mu.Unlock()
	for _, k := range gone {
		if err := os.RemoveAll(k.dir); err != nil {
			a.log.Warn("remove a detached job's output and files", "job", k.id, "err", err)
		}
	}
}

// writeFileSync writes a small file and syncs it, so that a crash leaves
// it whole or absent.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
