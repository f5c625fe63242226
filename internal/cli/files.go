package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

// progressThreshold is the upload size from which a progress bar shows.
const progressThreshold = 16 << 20

const blobChunk = 256 << 10

// blobSource is a folder whose files a manifest lists.
type blobSource struct {
	root string
	m    *hacv1.Manifest
}

// upload sends the blobs the node asked for, then blobs_done.
func (a *app) upload(sources []blobSource, want []string, send func(*hacv1.ExecRequest) error) error {
	type blobFile struct {
		path string
		size int64
	}
	byHash := map[string]blobFile{}
	for _, s := range sources {
		for _, f := range s.m.Files {
			if f.Sha256 != "" {
				byHash[f.Sha256] = blobFile{filepath.Join(s.root, filepath.FromSlash(f.Path)), f.Size}
			}
		}
	}
	var total int64
	for _, sum := range want {
		f, ok := byHash[sum]
		if !ok {
			return fmt.Errorf("the node asked for unknown content %s", sum)
		}
		total += f.size
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
		f := byHash[sum]
		if sum == workspace.EmptySum {
			// Nothing to read (an unreadable file of the server's layer
			// travels as empty).
			if err := send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Blob{Blob: &hacv1.Blob{Sha256: sum, Last: true}}}); err != nil {
				return err
			}
			continue
		}
		if err := sendBlob(f.path, sum, f.size, buf, send, bar); err != nil {
			return err
		}
	}
	return send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_BlobsDone{BlobsDone: true}})
}

// sendBlob sends one file's content, checking on the way that it is still
// what the manifest says: a file that grows, shrinks or changes while it
// is uploaded is an error that names it, and its last chunk is never sent
// (the node drops what it got).
func sendBlob(path, sum string, size int64, buf []byte, send func(*hacv1.ExecRequest) error, progress io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	defer f.Close()
	changed := fmt.Errorf("%s changed while it was uploaded: run the program again once it is written (or list it in .hacignore)", path)
	h := sha256.New()
	in := io.LimitReader(f, size+1)
	var sent int64
	for {
		n, err := io.ReadFull(in, buf)
		last := err != nil
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("upload %s: %w", path, err)
		}
		h.Write(buf[:n])
		if sent += int64(n); sent > size || last && (sent != size || hex.EncodeToString(h.Sum(nil)) != sum) {
			return changed
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
// folder, through an os.Root of it: nothing lands outside it, whatever
// symlinks the folder holds. It never writes under .git/ or through a
// symlink, and makes only symlinks that point down from where they are. A local file that changed during
// the run, or that existed without being uploaded, is never overwritten:
// the program's version lands beside it as NAME.hac-job<ID>. Each file is
// written to a temporary name and renamed when complete, so an interrupted
// transfer leaves no partial file.
type syncBack struct {
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

func newSyncBack(dir string, m *hacv1.Manifest, jobID string) (*syncBack, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	s := &syncBack{root: root, before: map[string]*hacv1.FileEntry{}, jobID: jobID, warned: map[string]bool{}}
	for _, f := range m.Files {
		s.before[f.Path] = f
	}
	return s, nil
}

// errRefused is a changed file that hac will not write.
var errRefused = errors.New("not written")

// target decides where a changed file goes, relative to the root.
func (s *syncBack) target(rel string) (string, error) {
	rel, err := workspace.CleanPath(rel)
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

func (s *syncBack) receive(c *hacv1.ChangedFile) error {
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
func (s *syncBack) abort() {
	if s.cur != nil {
		s.cur.Close()
		s.root.Remove(s.curTemp)
		s.cur = nil
	}
}

// finish drops a partial file, closes the folder and returns the warnings
// to show.
func (s *syncBack) finish() []string {
	s.abort()
	s.root.Close()
	return s.warnings
}
