package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DigestPrefix starts every digest; 64 lower-case hex digits follow.
const DigestPrefix = "sha256:"

// ValidDigest reports whether s is a digest.
func ValidDigest(s string) bool {
	h, ok := strings.CutPrefix(s, DigestPrefix)
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Digest is the digest of the stream Write makes of root.
func Digest(root string) (string, error) {
	h := sha256.New()
	if err := Write(root, h); err != nil {
		return "", err
	}
	return DigestPrefix + hex.EncodeToString(h.Sum(nil)), nil
}

// Write writes the tree at root to w as a deterministic tar stream. The
// tree must not change meanwhile (an image's root never does).
func Write(root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("image: %s: no owner", p)
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: int64(fi.Mode().Perm()), Uid: int(st.Uid), Gid: int(st.Gid),
			ModTime: time.Unix(st.Mtim.Sec, 0), Format: tar.FormatPAX}
		if fi.Mode()&fs.ModeSetuid != 0 {
			h.Mode |= 0o4000
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			h.Mode |= 0o2000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		var content *os.File
		switch {
		case fi.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case fi.Mode()&fs.ModeSymlink != 0:
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
			h.Typeflag = tar.TypeSymlink
		case fi.Mode().IsRegular():
			id := inode{uint64(st.Dev), st.Ino}
			if first, ok := seen[id]; ok && st.Nlink > 1 {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				break
			}
			seen[id] = h.Name
			if content, err = os.Open(p); err != nil {
				return err
			}
			defer content.Close()
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		default:
			return nil // devices, sockets and FIFOs are made by whoever runs the image
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if content != nil {
			n, err := io.Copy(tw, content)
			if err == nil && n != h.Size {
				err = fmt.Errorf("image: %s changed while it was read", p)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Unpack builds the stream r, which must have the given digest, into dir,
// a folder it makes. On any error it removes what it made.
func Unpack(r io.Reader, digest, dir string) (err error) {
	if !ValidDigest(digest) {
		return fmt.Errorf("image: %q is not a digest (want %s and 64 hex digits)", digest, DigestPrefix)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	h := sha256.New()
	in := io.TeeReader(r, h)
	tr := tar.NewReader(in)
	type stamp struct {
		name string
		t    time.Time
	}
	var dirs []stamp // folder times are set last: their content changes them
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("image: read: %w", err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if name == "" || path.Clean(name) != name || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("image: bad path %q", hdr.Name)
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		if hdr.Mode&0o4000 != 0 {
			mode |= fs.ModeSetuid
		}
		if hdr.Mode&0o2000 != 0 {
			mode |= fs.ModeSetgid
		}
		if hdr.Mode&0o1000 != 0 {
			mode |= fs.ModeSticky
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, stamp{name, hdr.ModTime})
		case tar.TypeSymlink:
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		case tar.TypeLink:
			if err := root.Link(hdr.Linkname, name); err != nil {
				return fmt.Errorf("image: link %s: %w", name, err)
			}
			continue // the first name set its owner and mode
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("image: %s: entries of type %q are not made", name, hdr.Typeflag)
		}
		if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeSymlink {
			if err := root.Chmod(name, mode); err != nil {
				return err
			}
			if hdr.Typeflag == tar.TypeReg {
				if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
					return err
				}
			}
		}
	}
	if _, err := io.Copy(io.Discard, in); err != nil {
		return fmt.Errorf("image: read: %w", err)
	}
	if got := DigestPrefix + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("image: the stream's digest is %s, not %s", got, digest)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		root.Chtimes(dirs[i].name, dirs[i].t, dirs[i].t)
	}
	return nil
}

// HostPaths are what an image that shows its host's system (vm/local's
// "host" image) takes from the host, read-only: the programs and
// libraries, and what the dynamic linker and Debian's alternatives need
// of /etc to find them. Its jobs take them from the node.
var HostPaths = []string{"/usr", "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"}
