package client

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// Record is what this machine keeps of a detached job it started: the
// folder it was started from, and what each uploaded file held then (or
// after the last fetch), so that hac fetch knows where the job's files go
// and which local files it may replace.
type Record struct {
	Addr  string          `json:"addr"`
	JobID string          `json:"job"`
	Dir   string          `json:"dir"`
	Files *hacv1.Manifest `json:"-"`
}

type recordFile struct {
	Record
	Files []recordEntry `json:"files"`
}

type recordEntry struct {
	Path    string `json:"p"`
	Size    int64  `json:"s"`
	MtimeNs int64  `json:"m"`
}

// recordLife is how long a record stays: longer than any node keeps a
// job's files.
const recordLife = 30 * 24 * time.Hour

// RecordsDir is where records live: $XDG_STATE_HOME/hac/jobs, or
// ~/.local/state/hac/jobs.
func RecordsDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "hac", "jobs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".local", "state", "hac", "jobs"), nil
}

// recordPath names a job's record: control planes number their jobs
// alike, so each control plane's address has its own folder.
func recordPath(addr, jobID string) (string, error) {
	if _, err := strconv.ParseUint(jobID, 10, 63); err != nil {
		return "", fmt.Errorf("job id %q is not a positive number (hac jobs lists yours)", jobID)
	}
	dir, err := RecordsDir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(addr))
	return filepath.Join(dir, hex.EncodeToString(sum[:8]), jobID+".json"), nil
}

// Save writes the record (0600, in a 0700 folder) and drops records past
// their life.
func (r *Record) Save() error {
	p, err := recordPath(r.Addr, r.JobID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f := recordFile{Record: *r}
	for _, e := range r.Files.GetFiles() {
		f.Files = append(f.Files, recordEntry{e.Path, e.Size, e.MtimeNs})
	}
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > recordLife {
			os.Remove(filepath.Join(filepath.Dir(p), e.Name()))
		}
	}
	return nil
}

// ErrNoRecord means this machine did not start the job, or its record
// is gone.
var ErrNoRecord = errors.New("no record of the job on this machine")

// LoadRecord reads a job's record.
func LoadRecord(addr, jobID string) (*Record, error) {
	p, err := recordPath(addr, jobID)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoRecord
	}
	if err != nil {
		return nil, err
	}
	var f recordFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("the record %s is damaged (%v): name the folder, as in hac fetch %s DIR", p, err, jobID)
	}
	r := f.Record
	r.Files = &hacv1.Manifest{}
	for _, e := range f.Files {
		r.Files.Files = append(r.Files.Files, &hacv1.FileEntry{Path: e.Path, Size: e.Size, MtimeNs: e.MtimeNs})
	}
	return &r, nil
}

// NewRecord describes a detached job started from dir with the files of m.
func NewRecord(addr, jobID, dir string, m *hacv1.Manifest) *Record {
	files := &hacv1.Manifest{}
	for _, f := range m.GetFiles() {
		files.Files = append(files.Files, &hacv1.FileEntry{Path: f.Path, Size: f.Size, MtimeNs: f.MtimeNs})
	}
	return &Record{Addr: addr, JobID: jobID, Dir: dir, Files: files}
}
