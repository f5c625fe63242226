package workspace

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// IgnoreFiles are read from every folder of a workspace, in this order;
// a folder's patterns apply below it.
var IgnoreFiles = []string{".gitignore", ".hacignore"}

// Walk builds the manifest of root. Ignored files and directories are left
// out, as are .git directories, hac's own cache (OwnCacheDir) and anything
// that is not a regular file, directory or symlink. Files whose identity hashes (if not nil) knows
// are not read again; the caller saves hashes after.
func Walk(root string, hashes *HashCache) (*hacv1.Manifest, error) {
	ig := &Ignore{}
	ig.Add(".git/")
	readIgnores := func(dir, base string) {
		for _, name := range IgnoreFiles {
			if f, err := os.Open(filepath.Join(dir, name)); err == nil {
				ig.AddFile(base, f)
				f.Close()
			}
		}
	}
	readIgnores(root, "")
	own := OwnCacheDir()
	m := &hacv1.Manifest{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A folder the user may not list goes empty, as the job sees it
			// (WalkDir listed it before it tried to read it).
			if p != root && d != nil && d.IsDir() && errors.Is(err, fs.ErrPermission) {
				return filepath.SkipDir
			}
			return err
		}
		if p == root {
			return nil
		}
		if d.IsDir() && p == own {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if ig.Match(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			readIgnores(p, rel) // for what is below it
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := &hacv1.FileEntry{Path: rel, Mode: uint32(info.Mode().Perm()), MtimeNs: info.ModTime().UnixNano()}
		switch {
		case d.IsDir():
			e.Mode |= uint32(fs.ModeDir)
		case info.Mode()&fs.ModeSymlink != 0:
			e.Link, err = os.Readlink(p)
			if err != nil {
				return err
			}
			e.Mode |= uint32(fs.ModeSymlink)
		case info.Mode().IsRegular():
			if e.Size, e.Sha256, err = hashes.content(rel, p, info); err != nil {
				return err
			}
		default:
			return nil // sockets, devices, pipes
		}
		m.Files = append(m.Files, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	return m, nil
}

// HashFile returns the hex SHA-256 of a file's first size bytes: the
// size its listing saw, so that a file growing meanwhile (a log) is hashed
// as listed; hac run's upload sends the same bytes.
func HashFile(p string, size int64) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return hashOf(io.LimitReader(f, size))
}

// hashOf returns the hex SHA-256 of what r holds.
func hashOf(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// TotalSize is the bytes of content a manifest names.
func TotalSize(m *hacv1.Manifest) int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Limits of a manifest from the network. The total counts every listing
// of a blob, since each becomes a copy on the node.
const (
	MaxFiles     = 500_000
	MaxTotalSize = 256 << 30
	maxPathLen   = 4096
)

// ErrTooBig means a manifest is past MaxFiles or MaxTotalSize.
var ErrTooBig = errors.New("workspace: too large")

// Validate checks every entry of a workspace's manifest from the network.
func Validate(m *hacv1.Manifest) error { return validate(m, false) }

// ValidateLayer checks a server layer's manifest (WalkLayer) from the
// network: a workspace's entries, and whiteouts.
func ValidateLayer(m *hacv1.Manifest) error { return validate(m, true) }

func validate(m *hacv1.Manifest, layer bool) error {
	if n := len(m.GetFiles()); n > MaxFiles {
		return fmt.Errorf("%w: %d files, more than %d (list big data sets in .hacignore and read them from shared storage)", ErrTooBig, n, MaxFiles)
	}
	var total int64
	for _, f := range m.GetFiles() {
		if f.Size < 0 || f.Size > MaxTotalSize || len(f.Path) > maxPathLen || len(f.Link) > maxPathLen {
			return fmt.Errorf("%w: %q: bad size or name length", ErrBadPath, f.Path)
		}
		if total += f.Size; total > MaxTotalSize {
			return fmt.Errorf("%w: more than %d GiB of files (list big data sets in .hacignore)", ErrTooBig, MaxTotalSize>>30)
		}
	}
	seen := make(map[string]bool, len(m.GetFiles()))
	links := map[string]bool{}
	for _, f := range m.GetFiles() {
		if fs.FileMode(f.Mode)&fs.ModeSymlink != 0 {
			links[f.Path] = true
		}
	}
	for _, f := range m.GetFiles() {
		if _, err := CleanPath(f.Path); err != nil {
			return err
		}
		for dir := path.Dir(f.Path); dir != "."; dir = path.Dir(dir) {
			if links[dir] {
				return fmt.Errorf("%w %q: its folder %q is a symlink", ErrBadPath, f.Path, dir)
			}
		}
		if seen[f.Path] {
			return fmt.Errorf("%w: %q listed twice", ErrBadPath, f.Path)
		}
		seen[f.Path] = true
		mode := fs.FileMode(f.Mode)
		if f.Opaque && (!layer || !mode.IsDir()) {
			return fmt.Errorf("workspace: %q: only a layer's folder is opaque", f.Path)
		}
		if f.Whiteout != (layer && f.Mode == whiteoutMode) {
			return fmt.Errorf("workspace: %q: a whiteout is a layer's deleted path, with its own mode", f.Path)
		}
		switch {
		case f.Whiteout, mode.IsDir(), mode&fs.ModeSymlink != 0:
		case mode.IsRegular():
			if !validHash(f.Sha256) || f.Size < 0 {
				return fmt.Errorf("workspace: %q: bad hash or size", f.Path)
			}
		default:
			return fmt.Errorf("workspace: %q: unsupported file type", f.Path)
		}
	}
	return nil
}
