package workspace

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// Trees are a node's read-only copies of workspaces, made from a Cache
// and shown to jobs as the lower layer of an overlay (the job's writes go
// to its own upper folder). A tree is kept while its owner's manifest is
// the same, so an unchanged workspace costs no copy at all; a tree for a
// changed manifest hard-links every file an earlier tree already holds
// at the same path with the same content, mode and mtime, and copies only
// the others.
//
// Everything in a tree is root's (an idmapped mount shows it as the job's
// uid) and is never written after it is made. A tree's files are its
// owner's alone: never the cache's blob itself (whose reads for other
// jobs would show in its atime and page cache) and never another owner's
// (whose link count would tell that they hold the same file). Files are
// shared by path too, so two files of one tree are never one inode (tar
// and du would take them for hard links).
type Trees struct {
	cache *Cache
	dir   string
	max   int64 // bytes of all trees' files past which idle trees go (0: no bound)

	mu    sync.Mutex
	trees map[string]*tree
	files map[treeFileKey]*treeFile
	size  int64 // bytes of all files
}

// maxIdleTrees bounds the trees kept that no job uses, whatever their size
// (their folders cost inodes).
const maxIdleTrees = 64

type tree struct {
	id    string
	dir   string
	refs  int
	used  time.Time
	ready chan struct{}
	err   error
	files []treeFileKey
}

// treeFileKey is what a tree's file is: an owner's file at a path, with
// its content, mode and mtime. Trees share a file with the same key.
type treeFileKey struct {
	owner string
	path  string
	sum   string
	perm  fs.FileMode
	mtime int64
}

type treeFile struct {
	path string // its own name under files/
	size int64
	refs int // the trees that hold it
}

// NewTrees keeps trees in dir, made from cache, with at most maxBytes of
// files held by idle trees (0: no bound). What an earlier agent left
// there is removed (in the background: it can be large).
func NewTrees(dir string, cache *Cache, maxBytes int64) (*Trees, error) {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("workspace: trees: %w", err)
	}
	old, _ := filepath.Glob(dir + ".old-*")
	if _, err := os.Lstat(dir); err == nil {
		gone := fmt.Sprintf("%s.old-%d", dir, time.Now().UnixNano())
		if err := os.Rename(dir, gone); err != nil {
			return nil, fmt.Errorf("workspace: trees: %w", err)
		}
		old = append(old, gone)
	}
	go func() {
		for _, d := range old {
			os.RemoveAll(d)
		}
	}()
	for _, d := range []string{dir, filepath.Join(dir, "files"), filepath.Join(dir, "trees")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("workspace: trees: %w", err)
		}
	}
	return &Trees{cache: cache, dir: dir, max: maxBytes, trees: map[string]*tree{}, files: map[treeFileKey]*treeFile{}}, nil
}

// Size is the bytes of the trees' files (each counted once).
func (t *Trees) Size() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.size
}

// Acquire returns the folder of owner's tree of m, made from the cache
// (whose blobs of m the caller has reserved) unless an earlier job left
// it; the tree stays until release is called, and while it is unchanged
// after that, until room is needed.
func (t *Trees) Acquire(owner string, m *hacv1.Manifest) (dir string, release func(), err error) {
	if err := Validate(m); err != nil {
		return "", nil, err
	}
	id := treeID(owner, m)
	t.mu.Lock()
	tr := t.trees[id]
	made := tr == nil
	if made {
		// Names are never reused: a tree or file that goes is removed
		// after the lock, while one of the same key may be made anew.
		tr = &tree{id: id, dir: filepath.Join(t.dir, "trees", id[:16]+"-"+rand.Text()), ready: make(chan struct{})}
		t.trees[id] = tr
	}
	tr.refs++
	t.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { t.release(tr) }) }
	if made {
		err := t.build(tr, owner, m)
		t.mu.Lock()
		if tr.err = err; err != nil {
			delete(t.trees, id) // the next job tries again
		}
		t.mu.Unlock()
		close(tr.ready)
	}
	<-tr.ready
	if tr.err != nil {
		release()
		return "", nil, tr.err
	}
	return tr.dir, release, nil
}

// treeID names owner's tree of m: every entry's path, mode, size, mtime,
// content and link target, in path order.
func treeID(owner string, m *hacv1.Manifest) string {
	files := append([]*hacv1.FileEntry(nil), m.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	h := sha256.New()
	var b []byte
	field := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	field(owner)
	h.Write(b)
	for _, f := range files {
		b = b[:0]
		field(f.Path)
		b = binary.AppendUvarint(b, uint64(f.Mode))
		b = binary.AppendVarint(b, f.Size)
		b = binary.AppendVarint(b, f.MtimeNs)
		field(f.Sha256)
		field(f.Link)
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// build makes tr's folder: in a temporary folder first, renamed when
// whole, so that a tree is never seen half made.
func (t *Trees) build(tr *tree, owner string, m *hacv1.Manifest) (err error) {
	tmp := tr.dir + ".tmp"
	defer func() {
		if err != nil {
			t.mu.Lock()
			gone := t.drop(tr.files)
			tr.files = nil
			t.mu.Unlock()
			for _, p := range append(gone, tmp) {
				os.RemoveAll(p)
			}
		}
	}()
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	err = layOut(m, tmp, -1, func(f *hacv1.FileEntry, p string) error {
		key := treeFileKey{owner: owner, path: f.Path, sum: f.Sha256, perm: fs.FileMode(f.Mode).Perm(), mtime: f.MtimeNs}
		src, err := t.file(key, f.Size)
		if err != nil {
			return fmt.Errorf("workspace: tree file %s: %w", f.Path, err)
		}
		tr.files = append(tr.files, key)
		return os.Link(src, p)
	})
	if err != nil {
		return err
	}
	return os.Rename(tmp, tr.dir)
}

// file returns the path of the file key names, made from its blob unless
// a tree holds it already, with one more reference held.
func (t *Trees) file(key treeFileKey, size int64) (string, error) {
	t.mu.Lock()
	if f := t.files[key]; f != nil {
		f.refs++
		t.mu.Unlock()
		return f.path, nil
	}
	t.mu.Unlock()
	p := filepath.Join(t.dir, "files", rand.Text())
	tmp := p + ".tmp"
	if err := t.cache.CopyOut(key.sum, tmp, key.perm, -1, -1, size); err != nil {
		os.Remove(tmp)
		return "", err
	}
	mt := time.Unix(0, key.mtime)
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		os.Remove(tmp)
		return "", err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.files[key]; f != nil { // another job made it meanwhile
		os.Remove(tmp)
		f.refs++
		return f.path, nil
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", err
	}
	t.files[key] = &treeFile{path: p, size: size, refs: 1}
	t.size += size
	return p, nil
}

// release lets go of a job's hold on tr; idle trees go, those used
// longest ago first, past maxIdleTrees or past the bound on bytes.
func (t *Trees) release(tr *tree) {
	t.mu.Lock()
	tr.refs--
	tr.used = time.Now()
	var gone []string
	var idle []*tree
	for _, x := range t.trees {
		if x.refs == 0 {
			idle = append(idle, x)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].used.Before(idle[j].used) })
	kept := len(idle)
	for _, x := range idle {
		if kept <= maxIdleTrees && (t.max <= 0 || t.size <= t.max) {
			break
		}
		kept--
		delete(t.trees, x.id)
		gone = append(gone, x.dir)
		gone = append(gone, t.drop(x.files)...)
	}
	t.mu.Unlock()
	for _, p := range gone {
		os.RemoveAll(p)
	}
}

// drop lets go of a tree's references to its files and returns the paths
// of those no tree holds any more, forgotten; t.mu is held.
func (t *Trees) drop(keys []treeFileKey) (gone []string) {
	for _, k := range keys {
		f := t.files[k]
		if f == nil {
			continue
		}
		if f.refs--; f.refs == 0 {
			delete(t.files, k)
			t.size -= f.size
			gone = append(gone, f.path)
		}
	}
	return gone
}
