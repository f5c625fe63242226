package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

// progressThreshold is the upload size from which a progress bar shows.
const progressThreshold = 16 << 20

const blobChunk = 256 << 10

// upload sends the blobs the node asked for, then blobs_done.
func (a *app) upload(root string, m *hacv1.Manifest, want []string, send func(*hacv1.ExecRequest) error) error {
	byHash := map[string]*hacv1.FileEntry{}
	for _, f := range m.Files {
		if f.Sha256 != "" {
			byHash[f.Sha256] = f
		}
	}
	var total int64
	for _, sum := range want {
		f := byHash[sum]
		if f == nil {
			return fmt.Errorf("the node asked for unknown content %s", sum)
		}
		total += f.Size
	}
	var bar io.Writer = io.Discard
	if total >= progressThreshold {
		if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			pb := progressbar.DefaultBytes(total, "[info] Uploading the workspace")
			defer pb.Finish()
			bar = pb
		} else {
			a.say("info", "Uploading %d files (%.1f MiB) of the workspace...", len(want), float64(total)/(1<<20))
		}
	}
	buf := make([]byte, blobChunk)
	for _, sum := range want {
		if err := sendBlob(filepath.Join(root, filepath.FromSlash(byHash[sum].Path)), sum, buf, send, bar); err != nil {
			return err
		}
	}
	return send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_BlobsDone{BlobsDone: true}})
}

func sendBlob(path, sum string, buf []byte, send func(*hacv1.ExecRequest) error, progress io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	defer f.Close()
	for {
		n, err := io.ReadFull(f, buf)
		last := err != nil
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("upload %s: %w", path, err)
		}
		progress.Write(buf[:n])
		if err := send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Blob{Blob: &hacv1.Blob{Sha256: sum, Data: buf[:n], Last: last}}}); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}

// syncBack writes the files a program created or changed into the caller's
// folder. A local file that changed during the run, or that existed without
// being uploaded, is never overwritten: the program's version lands beside
// it as NAME.hac-job<ID>.
type syncBack struct {
	root     string
	before   map[string]*hacv1.FileEntry // what each path held when hac last wrote or read it
	jobID    string
	cur      *os.File
	curPath  string
	curFinal string
	warned   map[string]bool
	warnings []string
}

func newSyncBack(root string, m *hacv1.Manifest, jobID string) *syncBack {
	s := &syncBack{root: root, before: map[string]*hacv1.FileEntry{}, jobID: jobID, warned: map[string]bool{}}
	for _, f := range m.Files {
		s.before[f.Path] = f
	}
	return s
}

// target decides where a changed file goes.
func (s *syncBack) target(rel string) (string, error) {
	p, err := workspace.SafeJoin(s.root, rel)
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return "", err
	}
	old := s.before[rel]
	if old != nil && fi.Mode().IsRegular() && fi.Size() == old.Size && fi.ModTime().UnixNano() == old.MtimeNs {
		return p, nil // unchanged here since the upload
	}
	alt := p + ".hac-job" + s.jobID
	if !s.warned[rel] {
		s.warned[rel] = true
		s.warnings = append(s.warnings, fmt.Sprintf("%s changed here while the program ran (or was not uploaded); the program's version is in %s", rel, filepath.Base(alt)))
	}
	return alt, nil
}

func (s *syncBack) receive(c *hacv1.ChangedFile) error {
	if c.Link != "" {
		p, err := s.target(c.Path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		os.Remove(p)
		return os.Symlink(c.Link, p)
	}
	if c.First {
		s.abort()
		p, err := s.target(c.Path)
		if err != nil {
			return fmt.Errorf("skipped %s: %v", c.Path, err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.CreateTemp(filepath.Dir(p), ".hac-incoming-")
		if err != nil {
			return err
		}
		s.cur, s.curPath, s.curFinal = f, c.Path, p
	}
	if s.cur == nil || s.curPath != c.Path {
		return nil // the file's first chunk was refused
	}
	if _, err := s.cur.Write(c.Data); err != nil {
		s.abort()
		return err
	}
	if !c.Last {
		return nil
	}
	f := s.cur
	s.cur = nil
	f.Chmod(fs.FileMode(c.Mode).Perm())
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), s.curFinal); err != nil {
		return err
	}
	// A later version of the same file (the program runs on) may replace
	// what hac wrote, but not what the user changed since.
	if fi, err := os.Lstat(s.curFinal); err == nil && s.curFinal == filepath.Join(s.root, filepath.FromSlash(c.Path)) {
		s.before[c.Path] = &hacv1.FileEntry{Path: c.Path, Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	}
	return nil
}

func (s *syncBack) abort() {
	if s.cur != nil {
		s.cur.Close()
		os.Remove(s.cur.Name())
		s.cur = nil
	}
}

// finish drops a partial file and returns the warnings to show.
func (s *syncBack) finish() []string {
	s.abort()
	return s.warnings
}
