package agent

import (
	"log/slog"
	"os"
	"path/filepath"
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
	record(5, 1, 2*time.Hour) // past its retention
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
