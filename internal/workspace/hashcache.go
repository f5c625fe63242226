package workspace

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HashCache remembers the hashes of a workspace's files by path, size,
// mtime, ctime, inode and device, as git's index does, so that a walk
// reads only the files that changed since the last one. A change to a
// file moves its ctime, which no program can set back; an entry is kept
// only for a file whose ctime was at least racyWindow older than the
// moment its content was read, so that a write in the same tick of the
// file system's clock cannot hide behind an unchanged ctime (git's "racy
// clean" entries).
type HashCache struct {
	path    string
	old     map[string]hashEntry // from the file
	entries map[string]hashEntry // of this walk: what Save writes
	changed bool
	racy    time.Duration // racyWindow; tests shorten it
	read    func(string, int64) (string, error)
}

type hashEntry struct {
	size, mtime, ctime int64
	ino, dev           uint64
	sum                string
}

// untrustedIdentity are the statfs magic numbers of file systems where a
// file's size, mtime, ctime and inode may stay while its content changes.
var untrustedIdentity = map[int64]bool{
	0x6969:     true, // NFS
	0x517b:     true, // SMB
	0xfe534d42: true, // SMB2
	0xff534d42: true, // CIFS
	0x65735546: true, // FUSE (sshfs, virtiofs, ...)
	0x01021997: true, // 9p
	0x00c36400: true, // Ceph
	0x5346414f: true, // AFS
	0x0bd00bd0: true, // Lustre
	0x786f4256: true, // VirtualBox shared folders
	0x4d44:     true, // FAT
	0x2011bab0: true, // exFAT
}

// racyWindow is how much older than its reading a file's ctime must be
// for its hash to be kept.
const racyWindow = 2 * time.Second

// hashCacheHeader starts a hash cache file; its version changes with the
// format.
const hashCacheHeader = "hac-hashes 1\n"

// maxHashCacheBytes bounds a hash cache file; past it, it is not read.
const maxHashCacheBytes = 512 << 20

// OpenHashCache reads the hash cache at path. A missing, unreadable or
// malformed file is an empty cache: the walk hashes every file, as it
// would without one. So is one that another user could have written (not
// the caller's own, or writable by others, or in such a folder, or a
// symlink): its entries would choose what a job reads.
func OpenHashCache(path string) *HashCache {
	c := &HashCache{path: path, entries: map[string]hashEntry{}, racy: racyWindow, read: HashFile}
	if f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0); err == nil {
		if ownedPrivately(f) && ownedPrivatelyPath(filepath.Dir(path)) {
			c.old, _ = decodeHashCache(io.LimitReader(f, maxHashCacheBytes))
		}
		f.Close()
	}
	if c.old == nil {
		c.old = map[string]hashEntry{}
	}
	return c
}

// ownedPrivately reports whether f is the caller's and no one else may
// write it.
func ownedPrivately(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && privateInfo(info)
}

func ownedPrivatelyPath(p string) bool {
	info, err := os.Lstat(p)
	return err == nil && privateInfo(info)
}

func privateInfo(info fs.FileInfo) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid() && info.Mode().Perm()&0o022 == 0
}

// content is the size and hash a manifest lists for the regular file at p:
// for one the caller may not read, none (its mode travels, not its
// content: the job may not read it either).
func (c *HashCache) content(rel, p string, info fs.FileInfo) (int64, string, error) {
	sum, err := c.sum(rel, p, info)
	if errors.Is(err, fs.ErrPermission) {
		return 0, EmptySum, nil
	}
	return info.Size(), sum, err
}

// sum returns the hash of the regular file at p (rel in the workspace),
// from the cache when its identity is unchanged.
func (c *HashCache) sum(rel, p string, info fs.FileInfo) (string, error) {
	if c == nil {
		return HashFile(p, info.Size())
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return HashFile(p, info.Size())
	}
	e := hashEntry{size: info.Size(), mtime: info.ModTime().UnixNano(), ctime: st.Ctim.Nano(), ino: st.Ino, dev: uint64(st.Dev)}
	if old, ok := c.old[rel]; ok && old.size == e.size && old.mtime == e.mtime && old.ctime == e.ctime && old.ino == e.ino && old.dev == e.dev {
		c.entries[rel] = old
		return old.sum, nil
	}
	readAt := time.Now()
	sum, err := c.read(p, info.Size())
	if err != nil {
		return "", err
	}
	c.changed = true
	if e.ctime < readAt.Add(-c.racy).UnixNano() {
		e.sum = sum
		c.entries[rel] = e
	}
	return sum, nil
}

// Save writes the entries of the last walk, when they differ from the
// file's, atomically and readable by the user only.
func (c *HashCache) Save() error {
	if !c.changed && len(c.entries) == len(c.old) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(c.path), ".hashes-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriter(f)
	encodeHashCache(w, c.entries)
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), c.path)
}

// encodeHashCache writes the header, then a line per entry: hash, size,
// mtime, ctime, inode, device and the quoted path.
func encodeHashCache(w io.Writer, entries map[string]hashEntry) {
	io.WriteString(w, hashCacheHeader)
	for rel, e := range entries {
		fmt.Fprintf(w, "%s %d %d %d %d %d %s\n", e.sum, e.size, e.mtime, e.ctime, e.ino, e.dev, strconv.Quote(rel))
	}
}

// decodeHashCache reads what encodeHashCache wrote; anything else is an
// error.
func decodeHashCache(r io.Reader) (map[string]hashEntry, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	rest, ok := bytes.CutPrefix(data, []byte(hashCacheHeader))
	if !ok {
		return nil, fmt.Errorf("workspace: not a hash cache")
	}
	entries := map[string]hashEntry{}
	for len(rest) > 0 {
		line, tail, found := bytes.Cut(rest, []byte("\n"))
		if !found {
			return nil, fmt.Errorf("workspace: hash cache: truncated")
		}
		rest = tail
		fields := strings.SplitN(string(line), " ", 7)
		if len(fields) != 7 || !validHash(fields[0]) {
			return nil, fmt.Errorf("workspace: hash cache: bad line")
		}
		var e hashEntry
		e.sum = fields[0]
		for i, n := range []*int64{&e.size, &e.mtime, &e.ctime} {
			if *n, err = strconv.ParseInt(fields[1+i], 10, 64); err != nil {
				return nil, fmt.Errorf("workspace: hash cache: %w", err)
			}
		}
		for i, n := range []*uint64{&e.ino, &e.dev} {
			if *n, err = strconv.ParseUint(fields[4+i], 10, 64); err != nil {
				return nil, fmt.Errorf("workspace: hash cache: %w", err)
			}
		}
		rel, err := strconv.Unquote(fields[6])
		if err != nil || rel == "" || e.size < 0 {
			return nil, fmt.Errorf("workspace: hash cache: bad entry")
		}
		entries[rel] = e
	}
	return entries, nil
}

// HashCachePath is where the hash cache of the workspace at root lives,
// under the user's cache folder. It refuses a workspace on a file system
// whose files' identity does not tell their changes: network ones (NFS,
// SMB, 9p, FUSE, Ceph...: attributes may come from a cache, ctimes from
// another clock) and FAT's (no ctime).
func HashCachePath(root string) (string, error) {
	var fsys syscall.Statfs_t
	if err := syscall.Statfs(root, &fsys); err != nil {
		return "", err
	}
	if untrustedIdentity[int64(fsys.Type)] {
		return "", fmt.Errorf("workspace: %s is on a file system whose file identities hac does not trust for hashes (type %#x)", root, fsys.Type)
	}
	dir := OwnCacheDir()
	if dir == "" {
		return "", errors.New("workspace: no cache folder (set HOME or XDG_CACHE_HOME)")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(abs))
	return filepath.Join(dir, "hashes", hex.EncodeToString(h[:16])), nil
}

// OwnCacheDir is hac's folder in the user's cache (~/.cache/hac), which no
// workspace takes along: it changes while one is uploaded. Empty when the
// user has no cache folder.
func OwnCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	abs, err := filepath.Abs(filepath.Join(dir, "hac"))
	if err != nil {
		return ""
	}
	return abs
}
