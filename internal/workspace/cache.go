package workspace

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// Cache is a node's content-addressed blob store, readable by the agent
// only. It holds at most max bytes (0: no bound), evicting the blobs used
// longest ago; blobs a job is being prepared from are pinned meanwhile.
type Cache struct {
	dir string
	max int64

	mu      sync.Mutex
	entries map[string]*blob
	size    int64
	// awaited counts the reservations of blobs not yet arrived; they are
	// pinned as they arrive.
	awaited map[string]int
}

// blob is one cached file.
type blob struct {
	size   int64
	used   time.Time
	pinned int
	// verified: hashed since this process has had it. Blobs an earlier
	// agent left are hashed on their first use (a crash may have left a
	// file of the right size with other bytes); after that the agent
	// alone can write them.
	verified bool
	// owners are the users who sent this content to this agent: only
	// they are told that the node has it. Anyone else sends it again,
	// so that the cache never answers whether another tenant has a file
	// (a hash is no proof of holding its content). Not kept across a
	// restart: after one, each user sends each blob once more.
	owners map[string]bool
}

// NewCache opens (creating) a blob cache in dir of at most maxBytes, and
// indexes what an earlier agent left there.
func NewCache(dir string, maxBytes int64) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("workspace: cache: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("workspace: cache: %w", err)
	}
	c := &Cache{dir: dir, max: maxBytes, entries: map[string]*blob{}, awaited: map[string]int{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if name := d.Name(); validHash(name) && filepath.Base(filepath.Dir(p)) == name[:2] {
			c.entries[name] = &blob{size: info.Size(), used: info.ModTime()}
			c.size += info.Size()
		} else {
			os.Remove(p) // a partial upload
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("workspace: cache: %w", err)
	}
	c.mu.Lock()
	c.evict()
	c.mu.Unlock()
	return c, nil
}

// Cap is the most the cache holds; 0 means no bound.
func (c *Cache) Cap() int64 { return c.max }

// Size is the bytes the cache holds.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

func (c *Cache) path(sum string) string { return filepath.Join(c.dir, sum[:2], sum) }

// Has reports whether the blob is cached.
func (c *Cache) Has(sum string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[sum]
	return ok
}

// Reserve returns the hashes of a manifest's files that owner must send,
// each once: those the cache lacks, and those it holds that owner never
// sent (see blob.owners). It pins the manifest's blobs (those there and
// those to come) until release is called, so that eviction cannot take
// them while the job is being prepared.
func (c *Cache) Reserve(m *hacv1.Manifest, owner string) (missing []string, release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	for _, f := range m.Files {
		if f.Sha256 == "" || seen[f.Sha256] {
			continue
		}
		seen[f.Sha256] = true
		if b, ok := c.entries[f.Sha256]; ok {
			b.pinned++
			if !b.owners[owner] {
				missing = append(missing, f.Sha256)
			}
		} else {
			c.awaited[f.Sha256]++
			missing = append(missing, f.Sha256)
		}
	}
	var once sync.Once
	return missing, func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for sum := range seen {
				if b, ok := c.entries[sum]; ok && b.pinned > 0 {
					b.pinned--
				} else if c.awaited[sum]--; c.awaited[sum] <= 0 {
					delete(c.awaited, sum)
				}
			}
			c.evict()
		})
	}
}

// evict removes the blobs used longest ago until the cache fits; c.mu is
// held.
func (c *Cache) evict() {
	if c.max <= 0 || c.size <= c.max {
		return
	}
	sums := make([]string, 0, len(c.entries))
	for sum, b := range c.entries {
		if b.pinned == 0 {
			sums = append(sums, sum)
		}
	}
	sort.Slice(sums, func(i, j int) bool { return c.entries[sums[i]].used.Before(c.entries[sums[j]].used) })
	for _, sum := range sums {
		if c.size <= c.max {
			return
		}
		os.Remove(c.path(sum))
		c.size -= c.entries[sum].size
		delete(c.entries, sum)
	}
}

// ErrDeclaredSize means a manifest declares a file of another size than
// its content's: the client's doing.
var ErrDeclaredSize = errors.New("workspace: a declared size is not its content's")

// ErrHashMismatch means a blob's content does not match its name.
var ErrHashMismatch = errors.New("workspace: blob content does not match its hash")

// Writer receives one blob; Commit checks the hash and stores it as one
// that owner sent.
type Writer struct {
	c     *Cache
	sum   string
	owner string
	n     int64 // bytes written
	f     *os.File
	h     interface {
		io.Writer
		Sum([]byte) []byte
	}
}

// Create starts writing the blob named sum, which owner sends.
func (c *Cache) Create(sum, owner string) (*Writer, error) {
	if !validHash(sum) {
		return nil, fmt.Errorf("workspace: bad blob hash %q", sum)
	}
	f, err := os.CreateTemp(c.dir, "incoming-")
	if err != nil {
		return nil, err
	}
	return &Writer{c: c, sum: sum, owner: owner, f: f, h: sha256.New()}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	return w.f.Write(p)
}

// Size is how many bytes were written.
func (w *Writer) Size() int64 { return w.n }

// CommitAs verifies and stores the blob under another name than it was
// created with (the client's file changed while it was sent), pinned
// until unpin is called: no Reserve awaited it.
func (w *Writer) CommitAs(sum string) (unpin func(), err error) {
	if !validHash(sum) {
		w.Abort()
		return nil, fmt.Errorf("workspace: bad blob hash %q", sum)
	}
	w.sum = sum
	if err := w.commit(1); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c := w.c
			c.mu.Lock()
			defer c.mu.Unlock()
			if b, ok := c.entries[sum]; ok && b.pinned > 0 {
				b.pinned--
			}
			c.evict()
		})
	}, nil
}

// Commit verifies and stores the blob.
func (w *Writer) Commit() error { return w.commit(0) }

// commit verifies and stores the blob, with pins more than the Reserves
// that await it (taken only once it is verified: a wrong hash pins
// nothing, another job's pins included).
func (w *Writer) commit(pins int) error {
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
	info, err := os.Stat(w.f.Name())
	if err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		return err
	}
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	// Pinned for the jobs whose Reserve is waiting for it.
	pins += c.awaited[w.sum]
	delete(c.awaited, w.sum)
	owners := map[string]bool{w.owner: true}
	if old, ok := c.entries[w.sum]; ok {
		c.size -= old.size
		pins += old.pinned
		maps.Copy(owners, old.owners)
	}
	c.entries[w.sum] = &blob{size: info.Size(), used: time.Now(), pinned: pins, verified: true, owners: owners}
	c.size += info.Size()
	c.evict()
	return nil
}

// Abort drops a partial blob.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// Materialize writes the manifest's tree into dest from the cache, every
// folder, file and link it makes owned by owner (uid and gid; -1 keeps the
// caller's). Files are copied, not linked, so the program cannot change the
// cache.
func (c *Cache) Materialize(m *hacv1.Manifest, dest string, owner int) error {
	if err := Validate(m); err != nil {
		return err
	}
	return layOut(m, dest, owner, func(f *hacv1.FileEntry, p string) error {
		if err := c.CopyOut(f.Sha256, p, fs.FileMode(f.Mode).Perm(), owner, owner, f.Size); err != nil {
			return fmt.Errorf("workspace: materialize %s: %w", f.Path, err)
		}
		mt := time.Unix(0, f.MtimeNs)
		os.Chtimes(p, mt, mt)
		return nil
	})
}

// layOut makes a validated manifest's folders and symlinks under dest,
// owned by owner (-1: the caller's), and has place put each regular file
// at its path p. Symlinks come last, so that nothing is written through
// them; folders get their modes (with the owner's rwx) at the very end.
func layOut(m *hacv1.Manifest, dest string, owner int, place func(f *hacv1.FileEntry, p string) error) error {
	chown := func(p string) error {
		if owner < 0 {
			return nil
		}
		return os.Lchown(p, owner, owner)
	}
	made := map[string]bool{}
	var mkdir func(dir string) error
	mkdir = func(dir string) error {
		if made[dir] {
			return nil
		}
		if dir != dest {
			if err := mkdir(filepath.Dir(dir)); err != nil {
				return err
			}
		}
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		made[dir] = true
		return chown(dir)
	}
	files := append([]*hacv1.FileEntry(nil), m.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	var dirs, links []*hacv1.FileEntry
	for _, f := range files {
		p := filepath.Join(dest, filepath.FromSlash(f.Path))
		if err := mkdir(filepath.Dir(p)); err != nil {
			return err
		}
		mode := fs.FileMode(f.Mode)
		switch {
		case mode.IsDir():
			if err := mkdir(p); err != nil {
				return err
			}
			dirs = append(dirs, f)
		case mode&fs.ModeSymlink != 0:
			links = append(links, f)
		default:
			if err := place(f, p); err != nil {
				return err
			}
		}
	}
	for _, f := range links {
		p := filepath.Join(dest, filepath.FromSlash(f.Path))
		if err := os.Symlink(f.Link, p); err != nil {
			return err
		}
		if err := chown(p); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chmod(filepath.Join(dest, filepath.FromSlash(dirs[i].Path)), fs.FileMode(dirs[i].Mode).Perm()|0o700)
	}
	return nil
}

// CopyOut writes a private copy of a blob to dst, owned by uid and gid
// (-1: the caller's), with mode perm whatever the umask. size is what the
// manifest says the file holds: a blob of another size is refused (sizes
// from the network are what limits count). A verified blob is
// copied in the kernel (copy_file_range: no pass through user space, a
// reflink where the file system has them) and checked by size; one an
// earlier agent left is hashed on the way, once. A blob that no longer
// matches is dropped from the cache.
func (c *Cache) CopyOut(sum, dst string, perm fs.FileMode, uid, gid int, size int64) error {
	c.mu.Lock()
	b, ok := c.entries[sum]
	verified := ok && b.verified
	var have int64
	if ok {
		have = b.size
	}
	c.mu.Unlock()
	if ok && have != size {
		return fmt.Errorf("%w: a file of %d bytes by its manifest has content of %d bytes (%s)", ErrDeclaredSize, size, have, sum)
	}
	in, err := os.Open(c.path(sum))
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if uid >= 0 {
		if err := out.Chown(uid, gid); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Chmod(perm); err != nil {
		out.Close()
		return err
	}
	var n int64
	h := sha256.New()
	if verified {
		n, err = out.ReadFrom(in)
	} else {
		n, err = io.Copy(io.MultiWriter(out, h), in)
	}
	if err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	sizeErr := error(nil)
	if n != size {
		sizeErr = fmt.Errorf("%w: a file of %d bytes by its manifest has content of %d bytes (%s)", ErrDeclaredSize, size, n, sum)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok = c.entries[sum]
	if !ok {
		return sizeErr // evicted meanwhile; the copy is whole
	}
	if n != b.size || !verified && hex.EncodeToString(h.Sum(nil)) != sum {
		os.Remove(c.path(sum))
		c.size -= b.size
		delete(c.entries, sum)
		return fmt.Errorf("%w %s (dropped from the cache; run the program again)", ErrHashMismatch, sum)
	}
	b.verified, b.used = true, time.Now()
	return sizeErr
}
