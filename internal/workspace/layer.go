package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// EmptySum is the SHA-256 of no bytes: what a layer's unreadable files
// carry (their owner and mode travel, their content does not).
const EmptySum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// whiteoutMode is a layer entry's mode for a deleted path: overlayfs marks
// one with a 0:0 character device.
const whiteoutMode = uint32(fs.ModeDevice | fs.ModeCharDevice)

// WalkLayer builds the manifest of a server's writable layer at root (its
// files as the server's overlayfs upper folder holds them): every folder,
// file and symlink with its owner, and a whiteout for each 0:0 character
// device. Paths for which skip says true (given whether they are folders)
// are left out with what is below them. A file or folder the caller may
// not read is listed with its owner and mode but no content, so that a
// job may not read it either.
func WalkLayer(root string, skip func(rel string, dir bool) bool, hashes *HashCache) (*hacv1.Manifest, error) {
	m := &hacv1.Manifest{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if skip(rel, d != nil && d.IsDir()) {
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if err != nil {
			// A folder that cannot be listed is shown empty (WalkDir
			// listed it before it tried to read it).
			if d != nil && d.IsDir() && errors.Is(err, fs.ErrPermission) {
				return filepath.SkipDir
			}
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner", p)
		}
		mode := info.Mode()
		e := &hacv1.FileEntry{Path: rel, Mode: uint32(mode.Perm() | mode&fs.ModeSticky), MtimeNs: info.ModTime().UnixNano(), Uid: st.Uid, Gid: st.Gid}
		switch {
		case mode.IsDir():
			e.Mode |= uint32(fs.ModeDir)
			e.Opaque = opaque(p)
		case mode&fs.ModeSymlink != 0:
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
			e.Mode |= uint32(fs.ModeSymlink)
		case mode.IsRegular():
			if e.Size, e.Sha256, err = hashes.content(rel, p, info); err != nil {
				return err
			}
		case mode&fs.ModeCharDevice != 0 && st.Rdev == 0:
			e.Mode, e.Whiteout, e.MtimeNs = whiteoutMode, true, 0
		default:
			return nil // sockets, pipes, devices
		}
		m.Files = append(m.Files, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("workspace: the server's layer: %w", err)
	}
	return m, nil
}

// opaqueXattr is where overlayfs marks an opaque folder in its upper
// folder when mounted with userxattr (servers made by hac are): the server
// removed the image's folder and made it again. A program in the server
// cannot set it (overlayfs keeps what they set apart).
const opaqueXattr = "user.overlay.opaque"

func opaque(p string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(p, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// UnderAny reports whether the slash-separated rel is one of tops or below
// one.
func UnderAny(rel string, tops []string) bool {
	for _, t := range tops {
		if rel == t || strings.HasPrefix(rel, t+"/") {
			return true
		}
	}
	return false
}
