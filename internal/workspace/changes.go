package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

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
	return hashOf(f)
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
