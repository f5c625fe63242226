package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// SyncBack writes the files a program created or changed into the caller's
// folder, through an os.Root of it: nothing lands outside it, whatever
// symlinks the folder holds. It never writes under .git/ or through a
// symlink, and makes only symlinks that point down from where they are. A local file that changed during
// the run, or that existed without being uploaded, is never overwritten:
// the program's version lands beside it as NAME.hac-job<ID>. Each file is
// written to a temporary name and renamed when complete, so an interrupted
// transfer leaves no partial file.
type SyncBack struct {
	root     *os.Root
	before   map[string]*hacv1.FileEntry // what each path held when hac last wrote or read it
	jobID    string
	cur      *os.File
	curTemp  string // relative paths under root
	curPath  string
	curFinal string
	warned   map[string]bool
	warnings []string
}

func NewSyncBack(dir string, m *hacv1.Manifest, jobID string) (*SyncBack, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	s := &SyncBack{root: root, before: map[string]*hacv1.FileEntry{}, jobID: jobID, warned: map[string]bool{}}
	for _, f := range m.Files {
		s.before[f.Path] = f
	}
	return s, nil
}

// errRefused is a changed file that hac will not write.
var errRefused = errors.New("not written")

// target decides where a changed file goes, relative to the root.
func (s *SyncBack) target(rel string) (string, error) {
	rel, err := CleanPath(rel)
	if err != nil {
		return "", err
	}
	if hasGit(rel) {
		return "", fmt.Errorf("%w: %s is inside .git/, which hac never writes", errRefused, rel)
	}
	// Nothing is written through a symlink, even one that stays inside:
	// it could lead into .git/, or be replaced later.
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		if fi, err := s.root.Lstat(filepath.FromSlash(strings.Join(parts[:i], "/"))); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return "", fmt.Errorf("%w: %s goes through the symlink %s", errRefused, rel, strings.Join(parts[:i], "/"))
		}
	}
	p := filepath.FromSlash(rel)
	fi, err := s.root.Lstat(p)
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

// hasGit reports whether a path is in a .git folder (any case: client
// disks may not tell .GIT from .git).
func hasGit(rel string) bool {
	for _, part := range strings.Split(rel, "/") {
		if strings.EqualFold(part, ".git") {
			return true
		}
	}
	return false
}

// insideLink reports whether a symlink from the program may be made: its
// target is relative, has no ".." (so that, however links chain, each
// one only leads down from where it is, never above the folder) and does
// not lead into .git/.
func insideLink(link string) bool {
	if link == "" || path.IsAbs(link) || strings.ContainsRune(link, 0) || hasGit(link) {
		return false
	}
	return !slices.Contains(strings.Split(link, "/"), "..")
}

// Receive writes one chunk of a changed file (ChangedFile, as the node
// sends them in order).
func (s *SyncBack) Receive(c *hacv1.ChangedFile) error {
	if c.Link != "" {
		if !insideLink(c.Link) {
			return fmt.Errorf("%w: %s is a symlink to %s, which could lead outside the folder (hac brings back symlinks that point down from where they are)", errRefused, c.Path, c.Link)
		}
		p, err := s.target(c.Path)
		if err != nil {
			return err
		}
		if err := s.root.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		s.root.Remove(p)
		return s.root.Symlink(c.Link, p)
	}
	if c.First {
		s.abort()
		p, err := s.target(c.Path)
		if err != nil {
			return fmt.Errorf("skipped %s: %w", c.Path, err)
		}
		if err := s.root.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		temp := filepath.Join(filepath.Dir(p), fmt.Sprintf(".hac-incoming-%s-%d", s.jobID, rand.Int64()))
		f, err := s.root.OpenFile(temp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		s.cur, s.curTemp, s.curPath, s.curFinal = f, temp, c.Path, p
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
		s.root.Remove(s.curTemp)
		return err
	}
	if err := s.root.Rename(s.curTemp, s.curFinal); err != nil {
		s.root.Remove(s.curTemp)
		return err
	}
	// A later version of the same file (the program runs on) may replace
	// what hac wrote, but not what the user changed since.
	if fi, err := s.root.Lstat(s.curFinal); err == nil && s.curFinal == filepath.FromSlash(c.Path) {
		s.before[c.Path] = &hacv1.FileEntry{Path: c.Path, Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	}
	return nil
}

// abort drops the file being received.
func (s *SyncBack) abort() {
	if s.cur != nil {
		s.cur.Close()
		s.root.Remove(s.curTemp)
		s.cur = nil
	}
}

// Finish drops a partial file, closes the folder and returns the warnings
// to show.
func (s *SyncBack) Finish() []string {
	s.abort()
	s.root.Close()
	return s.warnings
}

// Written lists what each path the program's files went to now holds, as
// NewSyncBack takes it: a later sync-back of the same job may replace
// those files, not ones changed here since.
func (s *SyncBack) Written() *hacv1.Manifest {
	m := &hacv1.Manifest{}
	for _, f := range s.before {
		m.Files = append(m.Files, f)
	}
	return m
}
