package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestKeptRecordsBounded: ended detached jobs' records go once their
// retention ended, and the oldest first while they take more than the
// node's budget; a running job's record stays whatever its size.
func TestKeptRecordsBounded(t *testing.T) {
	now := time.Now()
	a := &Agent{cfg: Config{DataDir: t.TempDir(), JobRetention: time.Hour, JobKeepBytes: 100}, kept: map[int64]*keptJob{}, log: slog.Default()}
	record := func(id int64, size int, ended time.Duration) *keptJob {
		dir := filepath.Join(a.keptDir(), strconv.FormatInt(id, 10))
		os.MkdirAll(filepath.Join(dir, "work"), 0o700)
		os.WriteFile(filepath.Join(dir, "work", "f"), make([]byte, size), 0o600)
		k := &keptJob{id: id, dir: dir, work: filepath.Join(dir, "work"), size: diskUsage(dir)}
		if ended >= 0 {
			k.end = &keptEnd{At: now.Add(-ended)}
		} else {
			k.run = &jobRun{id: id}
		}
		a.kept[id] = k
		return k
	}
	running := record(1, 500, -1)
	record(2, 60, 30*time.Minute)
	record(3, 60, 20*time.Minute)
	newest := record(4, 60, 10*time.Minute)
	record(5, 1, 2*time.Hour)                // past its retention
	a.cfg.JobKeepBytes = newest.size * 3 / 2 // room for one
	a.expireKept(now)
	if len(a.kept) != 2 || a.kept[1] != running || a.kept[4] != newest {
		t.Fatalf("kept %v, want the running job's and the newest", a.kept)
	}
	for _, id := range []string{"2", "3", "5"} {
		if _, err := os.Stat(filepath.Join(a.keptDir(), id)); !os.IsNotExist(err) {
			t.Errorf("record %s is still on disk: %v", id, err)
		}
	}
}

// TestKeptRecordsSharedAmongUsers: past the node's budget, the records
// that go are those of the user who holds the most, oldest first: one
// user's many jobs cannot push out another's output, even older.
func TestKeptRecordsSharedAmongUsers(t *testing.T) {
	now := time.Now()
	a := &Agent{cfg: Config{DataDir: t.TempDir(), JobRetention: time.Hour, JobKeepBytes: 100}, kept: map[int64]*keptJob{}, log: slog.Default()}
	record := func(id, user int64, ended time.Duration) {
		dir := filepath.Join(a.keptDir(), strconv.FormatInt(id, 10))
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, "output.0"), make([]byte, 30), 0o600)
		a.kept[id] = &keptJob{id: id, user: user, dir: dir, size: diskUsage(dir), end: &keptEnd{At: now.Add(-ended), User: user}}
	}
	record(1, 2, 50*time.Minute) // bob's, the oldest
	for id := int64(2); id <= 6; id++ {
		record(id, 1, time.Duration(10-id)*time.Minute) // alice's many
	}
	a.cfg.JobKeepBytes = a.kept[1].size*3 + a.kept[1].size/2 // room for three
	a.expireKept(now)
	var kept []int64
	for id := range a.kept {
		kept = append(kept, id)
	}
	slices.Sort(kept)
	if !slices.Equal(kept, []int64{1, 5, 6}) {
		t.Fatalf("kept %v, want bob's and alice's two newest", kept)
	}
}

// TestKeptStreamsBounded: one job takes at most maxJobStreams readers.
func TestKeptStreamsBounded(t *testing.T) {
	k := &keptJob{}
	for i := range maxJobStreams {
		if !k.openStream() {
			t.Fatalf("stream %d refused", i+1)
		}
	}
	if k.openStream() {
		t.Fatal("a stream past the bound was let in")
	}
	k.closeStream()
	if !k.openStream() {
		t.Fatal("a stream was refused after one closed")
	}
}

// TestKeptRecordsReadBack: a restarted agent knows whose each record is,
// also for a detached job that ran when the agent stopped.
func TestKeptRecordsReadBack(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{DataDir: dir}, kept: map[int64]*keptJob{}, log: slog.Default()}
	if _, err := a.keep(&jobRun{id: 3}, 7, true, false); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(a.keptDir(), "3", "manifest.pb"), nil, 0o600) // begun
	ended, err := a.keep(&jobRun{id: 4}, 9, true, false)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(a.keptDir(), "4", "manifest.pb"), nil, 0o600)
	ended.log = newOutputLog(ended.dir, 1<<20)
	if err := ended.ended(keptEnd{ExitCode: 0, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	b := &Agent{cfg: Config{DataDir: dir}, kept: map[int64]*keptJob{}, log: slog.Default()}
	if err := b.loadKept(); err != nil {
		t.Fatal(err)
	}
	if k := b.kept[3]; k == nil || k.user != 7 || k.end.ExitCode != 137 {
		t.Fatalf("the job that ran: %+v", k)
	}
	if k := b.kept[4]; k == nil || k.user != 9 || k.end.ExitCode != 0 {
		t.Fatalf("the job that ended: %+v", k)
	}
}

// TestDiskUsageWeighsWhatTakesNoBytes: a record of empty files and
// folders weighs their inodes, so that one cannot fill a node's disk with
// them while weighing nothing.
func TestDiskUsageWeighsWhatTakesNoBytes(t *testing.T) {
	dir := t.TempDir()
	for i := range 100 {
		os.Mkdir(filepath.Join(dir, strconv.Itoa(i)), 0o700)
		os.WriteFile(filepath.Join(dir, strconv.Itoa(i), "empty"), nil, 0o600)
	}
	if got := diskUsage(dir); got < 200*inodeWeight {
		t.Fatalf("100 folders with an empty file each weigh %d bytes", got)
	}
}
