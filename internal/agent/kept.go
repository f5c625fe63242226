package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// A node keeps every job's output (the last Config.JobOutputBytes of it:
// hac logs), and for detached jobs (hac run -d), which run without their
// client, their workspace too (hac fetch), from the start until
// Config.JobRetention after its end, or until newer records need the room
// (Config.JobKeepBytes for all of them on the node: the user who holds the
// most gives way first, so that one user's many jobs cannot push out
// everyone else's). Each lives in
// DataDir/kept/JOB: output.N (outputLog), manifest.pb (what the client
// uploaded, to tell what the program changed), work/ (what the program
// wrote in its workspace: the upper folder of the overlay the sandbox
// shows at the client's folder, whiteouts included; the whole workspace
// where the node copies it instead), work.ovl/ (that overlay's own, while
// the job runs), end.json (how it ended,
// and whose it is) and, for a detached job, user (whose it is, known
// before it ends). An agent restart keeps the records, and marks the jobs
// that ran as ended with the agent.

const (
	// DefaultJobOutputBytes is how much of a detached job's output a node
	// keeps: the last 64 MiB.
	DefaultJobOutputBytes = 64 << 20
	// DefaultJobRetention is how long a node keeps a detached job's output
	// and files after it ended.
	DefaultJobRetention = 24 * time.Hour
	// DefaultJobKeepBytes bounds what a node keeps of all detached jobs
	// that ended: the records that ended first go first.
	DefaultJobKeepBytes = 20 << 30
)

// keptJob is a detached job's output and files on this node.
type keptJob struct {
	id   int64
	user int64 // the job's user; 0 when not known (a record of an older agent)
	dir  string
	work string // the workspace; empty for an attached job's

	mu   sync.Mutex
	log  jobOutput // set once the job is prepared (begin)
	run  *jobRun   // nil once the program ended
	end  *keptEnd  // nil while it runs
	size int64     // bytes on disk, once it ended
	// streams counts the Output and Attach streams open on it.
	streams int
	// stdin is the program's standard input, for a detached job that
	// keeps it open (hac run -d -i) while it runs; hac attach writes to
	// it. stdinReady, nil for a job without it, is closed once the
	// program started (stdin is set) or never will (stdin stays nil).
	stdin      *stdinQueue
	stdinReady chan struct{}
}

// openStdin keeps the program's standard input for attachers.
func (k *keptJob) openStdin(w io.WriteCloser) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stdin = newStdinQueue(w, stdinBacklog)
	k.stdinDecidedLocked()
}

func (k *keptJob) stdinDecidedLocked() {
	if k.stdinReady == nil {
		return
	}
	select {
	case <-k.stdinReady: // decided already
	default:
		close(k.stdinReady)
	}
}

// closeStdin ends the program's standard input, for every attacher; a
// program that did not start yet never gets it.
func (k *keptJob) closeStdin() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stdin != nil {
		k.stdin.close()
		k.stdin = nil
	}
	k.stdinDecidedLocked()
}

// keepsStdin reports whether the job was started to keep its input open.
func (k *keptJob) keepsStdin() bool { return k.stdinReady != nil }

// input is the program's standard input once it started, nil when it is
// not open (or ctx ended first).
func (k *keptJob) input(ctx context.Context) *stdinQueue {
	if k.stdinReady == nil {
		return nil
	}
	select {
	case <-k.stdinReady:
	case <-ctx.Done():
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stdin
}

// keptEnd is how a detached job ended (end.json).
type keptEnd struct {
	ExitCode int32     `json:"exit_code"`
	Signal   int32     `json:"signal,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
	Dropped  int64     `json:"dropped,omitempty"`
	User     int64     `json:"user,omitempty"`
}

func (a *Agent) keptDir() string { return filepath.Join(a.cfg.DataDir, "kept") }

// keep starts the record of a job about to be prepared: a detached job's
// workspace goes to the record's work/ (made by the job's folders).
// An attached job's folder waits for the program's first output.
func (a *Agent) keep(run *jobRun, user int64, detached, keepStdin bool) (*keptJob, error) {
	dir := filepath.Join(a.keptDir(), strconv.FormatInt(run.id, 10))
	k := &keptJob{id: run.id, user: user, dir: dir, run: run}
	if detached && keepStdin {
		k.stdinReady = make(chan struct{})
	}
	if detached {
		if _, err := os.Lstat(dir); err == nil {
			return nil, errors.New("the node already has a record of this job")
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "user"), []byte(strconv.FormatInt(user, 10)), 0o600); err != nil {
			return nil, err
		}
		k.work = filepath.Join(dir, "work")
	}
	a.mu.Lock()
	a.kept[run.id] = k
	a.mu.Unlock()
	return k, nil
}

// begin opens the output log and, for a detached job, records what the
// client uploaded, once the workspace is in place.
func (k *keptJob) begin(m *hacv1.Manifest, outputBytes, runOutputBytes int64) error {
	if k.work != "" {
		raw, err := proto.Marshal(m)
		if err == nil {
			err = writeFileSync(filepath.Join(k.dir, "manifest.pb"), raw)
		}
		if err != nil {
			return err
		}
	}
	var log jobOutput = newMemLog(runOutputBytes)
	if k.work != "" {
		log = newOutputLog(k.dir, outputBytes)
	}
	k.mu.Lock()
	k.log = log
	k.mu.Unlock()
	return nil
}

// output is the job's output log; nil while the job is being prepared.
func (k *keptJob) output() jobOutput {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.log
}

// discard drops the record of a job that never started.
func (a *Agent) discard(k *keptJob) {
	k.closeStdin() // attachers waiting for it hear there is none
	a.mu.Lock()
	delete(a.kept, k.id)
	a.mu.Unlock()
	os.RemoveAll(k.dir)
}

// ended records the program's end; followers hear it. A detached job's
// end is synced to the disk (its record is all there is of it); an
// attached run's output goes to the disk now, if it wrote any.
func (k *keptJob) ended(e keptEnd) error {
	log := k.output()
	e.Dropped, e.User = log.dropped(), k.user
	after := log // what later readers read
	raw, err := json.Marshal(e)
	var size int64
	switch {
	case err != nil:
	case k.work != "":
		err = writeFileSync(filepath.Join(k.dir, "end.json"), raw)
		size = diskUsage(k.dir)
	case log.written():
		// Not synced: a courtesy to hac logs after a restart.
		if mem, ok := log.(*memLog); ok {
			err = mem.save(k.dir)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(k.dir, "end.json"), raw, 0o600)
			after = openOutputLog(k.dir, e.Dropped)
		}
		size = diskUsage(k.dir)
	}
	k.mu.Lock()
	k.run, k.end, k.size, k.log = nil, &e, size, after
	k.mu.Unlock()
	k.closeStdin() // a writer waiting on it returns
	log.close()    // its followers read to the end, then find the end above
	return err
}

// state returns the job's running program (nil once it ended) and its end.
func (k *keptJob) state() (*jobRun, *keptEnd) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.run, k.end
}

// maxJobStreams bounds the Output and Attach streams open on one job.
const maxJobStreams = 8

// openStream counts a stream on the job; false when it has too many.
func (k *keptJob) openStream() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.streams >= maxJobStreams {
		return false
	}
	k.streams++
	return true
}

func (k *keptJob) closeStream() {
	k.mu.Lock()
	k.streams--
	k.mu.Unlock()
}

// uploaded returns what the client uploaded (read back each time: a
// manifest can be large, and records many).
func (k *keptJob) uploaded() (*hacv1.Manifest, error) {
	raw, err := os.ReadFile(filepath.Join(k.dir, "manifest.pb"))
	if err != nil {
		return nil, err
	}
	m := &hacv1.Manifest{}
	if err := proto.Unmarshal(raw, m); err != nil {
		return nil, err
	}
	return m, nil
}

// exited is the end as the Output stream says it.
func (e *keptEnd) exited() *hacv1.Exited {
	return &hacv1.Exited{ExitCode: e.ExitCode, Signal: e.Signal, Reason: e.Reason}
}

// loadKept reads back the records an earlier agent left: those that
// ended stay until their retention ends; one whose program still ran
// ended with that agent, now.
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
		_, noManifest := os.Stat(filepath.Join(dir, "manifest.pb"))
		if err != nil || id <= 0 || !hasOutput(dir) && noManifest != nil {
			os.RemoveAll(dir) // not a record, or one of a job that never started
			continue
		}
		os.RemoveAll(filepath.Join(dir, "work.ovl")) // its overlay's, gone with its job
		var end keptEnd
		raw, err := os.ReadFile(filepath.Join(dir, "end.json"))
		if err != nil || json.Unmarshal(raw, &end) != nil {
			end = keptEnd{ExitCode: 137, Reason: "the node agent stopped while it ran", At: time.Now()}
			if raw, err := os.ReadFile(filepath.Join(dir, "user")); err == nil {
				end.User, _ = strconv.ParseInt(string(raw), 10, 64)
			}
			if raw, err := json.Marshal(end); err == nil {
				writeFileSync(filepath.Join(dir, "end.json"), raw)
			}
		}
		k := &keptJob{id: id, user: end.User, dir: dir, log: openOutputLog(dir, end.Dropped), end: &end, size: diskUsage(dir)}
		if _, err := os.Stat(filepath.Join(dir, "manifest.pb")); err == nil {
			k.work = filepath.Join(dir, "work") // a detached job's
		}
		a.kept[id] = k
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

// maxKeptRecords bounds the records of ended jobs, whatever their size
// (one that wrote nothing takes no disk, but memory).
const maxKeptRecords = 10000

// keptRecord is an ended job's record as expireKept weighs it.
type keptRecord struct {
	k    *keptJob
	at   time.Time
	size int64
}

// expireKept removes the records whose retention ended, and then, while
// ended records take more than Config.JobKeepBytes or are more than
// maxKeptRecords, one of the user who holds the most of them (bytes, or
// records for the count): that user's that ended first. A user who fills
// the node's budget with many jobs so loses their own records, not
// everyone else's.
func (a *Agent) expireKept(now time.Time) {
	a.mu.Lock()
	byUser := map[int64][]keptRecord{}
	bytes := map[int64]int64{}
	var total int64
	count := 0
	for _, k := range a.kept {
		k.mu.Lock()
		if k.end != nil {
			byUser[k.user] = append(byUser[k.user], keptRecord{k, k.end.At, k.size})
			bytes[k.user] += k.size
			total += k.size
			count++
		}
		k.mu.Unlock()
	}
	var gone []*keptJob
	drop := func(user int64) {
		r := byUser[user][0]
		byUser[user] = byUser[user][1:]
		bytes[user] -= r.size
		total -= r.size
		count--
		delete(a.kept, r.k.id)
		gone = append(gone, r.k)
	}
	for user, rs := range byUser {
		slices.SortFunc(rs, func(x, y keptRecord) int { return x.at.Compare(y.at) })
		for len(byUser[user]) > 0 && now.Sub(byUser[user][0].at) > a.cfg.JobRetention {
			drop(user)
		}
	}
	// heaviest is the user whose record gives way: the one holding the
	// most bytes (records, when only their count is over), then the one
	// whose record is oldest.
	heaviest := func(byCount bool) int64 {
		weight := func(user int64) int64 {
			if byCount {
				return int64(len(byUser[user]))
			}
			return bytes[user]
		}
		var most int64
		found := false
		for user, rs := range byUser {
			if len(rs) > 0 && (!found || weight(user) > weight(most) ||
				weight(user) == weight(most) && rs[0].at.Before(byUser[most][0].at)) {
				most, found = user, true
			}
		}
		return most
	}
	for total > a.cfg.JobKeepBytes || count > maxKeptRecords {
		drop(heaviest(total <= a.cfg.JobKeepBytes))
	}
	a.mu.Unlock()
	for _, k := range gone {
		if err := os.RemoveAll(k.dir); err != nil {
			a.log.Warn("remove a detached job's output and files", "job", k.id, "err", err)
		}
	}
}

// hasOutput reports whether dir holds an output log's file.
func hasOutput(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "output.*"))
	return len(m) > 0
}

// diskUsage is what dir takes of the disk: its blocks, and an inode for
// each entry that takes none.
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		// What it takes of the disk: its blocks (a sparse file takes
		// few), and an inode's worth for what takes none (an empty file,
		// a link, a million folders).
		used := fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			used = st.Blocks * 512
		}
		n += max(used, inodeWeight)
		return nil
	})
	return n
}

// inodeWeight is what an entry that takes no block weighs in a record's
// size: an ext4 inode.
const inodeWeight = 256

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
