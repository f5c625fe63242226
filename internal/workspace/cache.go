package workspace

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// Cache is a node's content-addressed blob store.
type Cache struct {
	dir string
}

// NewCache opens (creating) a blob cache in dir.
func NewCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("workspace: cache: %w", err)
	}
	return &Cache{dir: dir}, nil
}

func (c *Cache) path(sum string) string { return filepath.Join(c.dir, sum[:2], sum) }

// Has reports whether the blob is cached.
func (c *Cache) Has(sum string) bool {
	_, err := os.Stat(c.path(sum))
	return err == nil
}

// Missing returns the hashes of a manifest's files that the cache lacks,
// each once.
func (c *Cache) Missing(m *hacv1.Manifest) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range m.Files {
		if f.Sha256 != "" && !seen[f.Sha256] && !c.Has(f.Sha256) {
			seen[f.Sha256] = true
			out = append(out, f.Sha256)
		}
	}
	return out
}

// ErrHashMismatch means a blob's content does not match its name.
var ErrHashMismatch = errors.New("workspace: blob content does not match its hash")

// Writer receives one blob; Commit checks the hash and stores it.
type Writer struct {
	c   *Cache
	sum string
	f   *os.File
	h   interface {
		io.Writer
		Sum([]byte) []byte
	}
}

// Create starts writing the blob named sum.
func (c *Cache) Create(sum string) (*Writer, error) {
	if !validHash(sum) {
		return nil, fmt.Errorf("workspace: bad blob hash %q", sum)
	}
	f, err := os.CreateTemp(c.dir, "incoming-")
	if err != nil {
		return nil, err
	}
	return &Writer{c: c, sum: sum, f: f, h: sha256.New()}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	w.h.Write(p)
	return w.f.Write(p)
}

// Commit verifies and stores the blob.
func (w *Writer) Commit() error {
	defer os.Remove(w.f.Name())
	if err := w.f.Close(); err != nil {
		return err
	}
	if hex.EncodeToString(w.h.Sum(nil)) != w.sum {
		return fmt.Errorf("%w %s", ErrHashMismatch, w.sum)
	}
	dst := w.c.path(w.sum)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.Rename(w.f.Name(), dst)
}

// Abort drops a partial blob.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// Materialize writes the manifest's tree into dest from the cache. Files
// are copied, not linked, so the program cannot change the cache.
func (c *Cache) Materialize(m *hacv1.Manifest, dest string) error {
	if err := Validate(m); err != nil {
		return err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	files := append([]*hacv1.FileEntry(nil), m.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	var dirs, links []*hacv1.FileEntry
	for _, f := range files {
		p := filepath.Join(dest, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := fs.FileMode(f.Mode)
		switch {
		case mode.IsDir():
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, f)
			continue
		case mode&fs.ModeSymlink != 0:
			links = append(links, f) // last, so that nothing is written through them
			continue
		}
		if err := copyFile(c.path(f.Sha256), p, mode.Perm()); err != nil {
			return fmt.Errorf("workspace: materialize %s: %w", f.Path, err)
		}
		mt := time.Unix(0, f.MtimeNs)
		os.Chtimes(p, mt, mt)
	}
	for _, f := range links {
		if err := os.Symlink(f.Link, filepath.Join(dest, filepath.FromSlash(f.Path))); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chmod(filepath.Join(dest, filepath.FromSlash(dirs[i].Path)), fs.FileMode(dirs[i].Mode).Perm()|0o700)
	}
	return nil
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Change is a file the program created or changed.
type Change struct {
	Path string // slash-separated, relative
	Mode fs.FileMode
	Link string // symlinks
}

// Changes lists the files under dest that are new or differ from the
// manifest (by size, then mtime, then content), in path order. Everything
// is read through an os.Root, so a program that swaps a folder for a
// symlink while it is listed cannot make the reader leave dest.
func Changes(m *hacv1.Manifest, dest string) ([]Change, error) {
	root, err := os.OpenRoot(dest)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	before := make(map[string]*hacv1.FileEntry, len(m.GetFiles()))
	for _, f := range m.GetFiles() {
		before[f.Path] = f
	}
	var out []Change
	err = fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel == "." || d.IsDir() {
			return nil
		}
		info, err := root.Lstat(rel)
		if err != nil {
			return nil // gone since it was listed
		}
		old := before[rel]
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := root.Readlink(rel)
			if err != nil {
				return nil
			}
			if old == nil || old.Link != link {
				out = append(out, Change{Path: rel, Mode: info.Mode(), Link: link})
			}
		case info.Mode().IsRegular():
			if old != nil && old.Size == info.Size() && old.MtimeNs == info.ModTime().UnixNano() &&
				fs.FileMode(old.Mode).Perm() == info.Mode().Perm() {
				return nil
			}
			if old != nil && old.Size == info.Size() && fs.FileMode(old.Mode).Perm() == info.Mode().Perm() {
				if sum, err := hashIn(root, rel); err == nil && sum == old.Sha256 {
					return nil
				}
			}
			out = append(out, Change{Path: rel, Mode: info.Mode()})
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].Path, out[j].Path) < 0 })
	return out, err
}

// OpenRegular opens rel under root for reading if it is a regular file,
// never following a symlink out of root and never waiting on a FIFO.
func OpenRegular(root *os.Root, rel string) (*os.File, error) {
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("workspace: %s is not a regular file", rel)
	}
	return f, nil
}

func hashIn(root *os.Root, rel string) (string, error) {
	f, err := OpenRegular(root, rel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SafeJoin returns root/rel for writing, after checking that rel is clean
// and that no folder on the way is a symlink, so that a file can never be
// written outside root.
func SafeJoin(root, rel string) (string, error) {
	rel, err := CleanPath(rel)
	if err != nil {
		return "", err
	}
	parts := strings.Split(rel, "/")
	cur := root
	for _, part := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("%w %q: %s is not a folder", ErrBadPath, rel, cur)
		}
	}
	return filepath.Join(root, filepath.FromSlash(rel)), nil
}
