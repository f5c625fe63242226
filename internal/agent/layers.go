package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

// layerStore keeps each server's changes (an Environment's layer) as
// overlay lower folders: a base, and one delta per run whose layer
// differed, holding just what changed (whiteouts for what went), so that
// an unchanged environment makes nothing and a changed file makes a folder
// of one file. Folders are never changed once made (overlayfs forbids
// changing a mounted layer): running jobs hold the ones they mount, and a
// chain past maxDeltas is folded into a new base, the old folders going
// when their last job ends.
type layerStore struct {
	dir   string
	cache *workspace.Cache

	mu      sync.Mutex
	servers map[int64]*serverLayers
	seq     int
}

// maxDeltas bounds a chain's deltas (overlayfs takes up to 500 layers; each
// costs the job's start a mount).
const maxDeltas = 8

type serverLayers struct {
	mu    sync.Mutex // one preparation at a time
	chain []*layer   // base first
	shown map[string]*hacv1.FileEntry
}

type layer struct {
	dir  string
	refs int  // running jobs that mount it (layerStore.mu)
	gone bool // out of its chain: removed at refs 0
}

func newLayerStore(dir string, cache *workspace.Cache) (*layerStore, error) {
	// Chains an earlier agent made are rebuilt from the cache on demand.
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &layerStore{dir: dir, cache: cache, servers: map[int64]*serverLayers{}}, nil
}

// prepare makes the folders that show server's layer m (its blobs are in
// the cache), top first; owners are the server's, uid (the client's) among
// them, every other but root's shown as nobody. release gives them back.
func (ls *layerStore) prepare(server int64, m *hacv1.Manifest, uid, gid uint32) (dirs []string, release func(), err error) {
	ls.mu.Lock()
	sl := ls.servers[server]
	if sl == nil {
		sl = &serverLayers{shown: map[string]*hacv1.FileEntry{}}
		ls.servers[server] = sl
	}
	ls.mu.Unlock()
	sl.mu.Lock()
	defer sl.mu.Unlock()

	want := make(map[string]*hacv1.FileEntry, len(m.Files))
	for _, f := range m.Files {
		want[f.Path] = sanitized(f, uid, gid)
	}
	var changed []*hacv1.FileEntry
	for p, f := range want {
		if !sameEntry(sl.shown[p], f) {
			changed = append(changed, f)
		}
	}
	var removed []string
	for p := range sl.shown {
		if want[p] == nil {
			removed = append(removed, p)
		}
	}
	changed = withOpaqueContent(changed, want)
	if len(changed) > 0 || len(removed) > 0 || len(sl.chain) == 0 {
		if len(sl.chain) > maxDeltas {
			// Fold: a new base of everything.
			changed, removed = m.Files[:0:0], nil
			for _, f := range want {
				changed = append(changed, f)
			}
			ls.drop(sl.chain)
			sl.chain = nil
		}
		l, err := ls.build(server, changed, removed, want)
		if err != nil {
			return nil, nil, err
		}
		sl.chain = append(sl.chain, l)
		sl.shown = want
	}
	held := append([]*layer(nil), sl.chain...)
	ls.mu.Lock()
	for _, l := range held {
		l.refs++
	}
	ls.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		dirs = append(dirs, held[i].dir)
	}
	var once sync.Once
	return dirs, func() { once.Do(func() { ls.unhold(held) }) }, nil
}

// withOpaqueContent adds to the changed entries everything below a folder
// among them that is opaque: it hides all the chain holds below it, so its
// layer must hold its whole content.
func withOpaqueContent(changed []*hacv1.FileEntry, want map[string]*hacv1.FileEntry) []*hacv1.FileEntry {
	var opaque []string
	in := map[string]bool{}
	for _, f := range changed {
		in[f.Path] = true
		if f.Opaque {
			opaque = append(opaque, f.Path)
		}
	}
	if len(opaque) == 0 {
		return changed
	}
	for p, f := range want {
		if !in[p] && workspace.UnderAny(p, opaque) {
			changed = append(changed, f)
		}
	}
	return changed
}

// drop takes layers out of their chain; each goes when no job holds it.
func (ls *layerStore) drop(chain []*layer) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, l := range chain {
		l.gone = true
		if l.refs == 0 {
			os.RemoveAll(l.dir)
		}
	}
}

func (ls *layerStore) unhold(held []*layer) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, l := range held {
		if l.refs--; l.refs == 0 && l.gone {
			os.RemoveAll(l.dir)
		}
	}
}

// sanitized is an entry as the node stores it: no set-uid or set-gid bits,
// owners the server's user, root or nobody.
func sanitized(f *hacv1.FileEntry, uid, gid uint32) *hacv1.FileEntry {
	c := &hacv1.FileEntry{Path: f.Path, Mode: f.Mode &^ uint32(fs.ModeSetuid|fs.ModeSetgid), Size: f.Size, Sha256: f.Sha256, Link: f.Link,
		MtimeNs: f.MtimeNs, Whiteout: f.Whiteout, Opaque: f.Opaque, Uid: nobody, Gid: nobody}
	if f.Uid == uid || f.Uid == 0 {
		c.Uid = f.Uid
	}
	if f.Gid == gid || f.Gid == 0 {
		c.Gid = f.Gid
	}
	return c
}

const nobody = 65534

// sameEntry reports whether the chain shows f already (a folder's time
// aside: it moves with every entry made in it).
func sameEntry(a, b *hacv1.FileEntry) bool {
	if a == nil {
		return false
	}
	same := a.Mode == b.Mode && a.Sha256 == b.Sha256 && a.Link == b.Link && a.Uid == b.Uid && a.Gid == b.Gid && a.Whiteout == b.Whiteout && a.Opaque == b.Opaque
	return same && (fs.FileMode(a.Mode).IsDir() || a.MtimeNs == b.MtimeNs)
}

// build makes a new layer folder of these entries, and whiteouts for the
// removed paths; want gives the folders above them their owners and modes.
func (ls *layerStore) build(server int64, entries []*hacv1.FileEntry, removed []string, want map[string]*hacv1.FileEntry) (*layer, error) {
	ls.mu.Lock()
	ls.seq++
	dir := filepath.Join(ls.dir, strconv.FormatInt(server, 10), strconv.Itoa(ls.seq))
	ls.mu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	err := ls.write(dir, entries, removed, want)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("the server's files on the node: %w", err)
	}
	// The base of the overlay is the job's root: its mode is /'s.
	os.Chmod(dir, 0o755)
	return &layer{dir: dir}, nil
}

func (ls *layerStore) write(dir string, entries []*hacv1.FileEntry, removed []string, want map[string]*hacv1.FileEntry) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	made := map[string]bool{".": true}
	var folders []*hacv1.FileEntry
	var mkdir func(rel string) error
	mkdir = func(rel string) error {
		if made[rel] {
			return nil
		}
		if err := mkdir(path.Dir(rel)); err != nil {
			return err
		}
		made[rel] = true
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		f := want[rel]
		if f == nil || !fs.FileMode(f.Mode).IsDir() {
			f = &hacv1.FileEntry{Path: rel, Mode: uint32(fs.ModeDir | 0o755)}
		}
		folders = append(folders, f)
		return os.Lchown(p, int(f.Uid), int(f.Gid))
	}
	for _, f := range entries {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		mode := fs.FileMode(f.Mode)
		if mode.IsDir() {
			if err := mkdir(f.Path); err != nil {
				return err
			}
			if f.Opaque {
				if err := unix.Lsetxattr(p, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
					return fmt.Errorf("mark %s opaque: %w", f.Path, err)
				}
			}
			continue
		}
		if err := mkdir(path.Dir(f.Path)); err != nil {
			return err
		}
		switch {
		case f.Whiteout:
			if err := whiteout(p); err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			if err := os.Symlink(f.Link, p); err != nil {
				return err
			}
		default:
			if err := ls.cache.CopyOut(f.Sha256, p, mode.Perm(), int(f.Uid), int(f.Gid)); err != nil {
				return fmt.Errorf("%s: %w", f.Path, err)
			}
			os.Chtimes(p, timeNs(f.MtimeNs), timeNs(f.MtimeNs))
			continue
		}
		if err := os.Lchown(p, int(f.Uid), int(f.Gid)); err != nil {
			return err
		}
	}
	// A removed path hides what the chain below holds there, unless a
	// removed folder above it or a new non-folder in its place does.
	sort.Strings(removed)
	opaqueHere := map[string]bool{}
	for _, f := range entries {
		if f.Opaque {
			opaqueHere[f.Path] = true
		}
	}
	hidden := func(p string) bool {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if f := want[d]; f != nil && !fs.FileMode(f.Mode).IsDir() || want[d] == nil && contains(removed, d) || opaqueHere[d] {
				return true
			}
		}
		return false
	}
	for _, p := range removed {
		if want[p] != nil || hidden(p) {
			continue
		}
		if err := mkdir(path.Dir(p)); err != nil {
			return err
		}
		if err := whiteout(filepath.Join(dir, filepath.FromSlash(p))); err != nil {
			return err
		}
	}
	for i := len(folders) - 1; i >= 0; i-- {
		f := folders[i]
		os.Chmod(filepath.Join(dir, filepath.FromSlash(f.Path)), fs.FileMode(f.Mode).Perm()|fs.FileMode(f.Mode)&fs.ModeSticky)
	}
	return nil
}

func contains(sorted []string, s string) bool {
	i := sort.SearchStrings(sorted, s)
	return i < len(sorted) && sorted[i] == s
}

// whiteout marks a deleted path for overlayfs: a 0:0 character device.
func whiteout(p string) error {
	if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %s: %w", p, err)
	}
	return nil
}

var errNoFile = errors.New("not in the job's root")

// readShown reads the file rel of a job's root, as its overlay shows it:
// from the topmost of dirs that has it (a whiteout hides it), else from
// the image's root.
func readShown(dirs []string, imageRoot, rel string, max int64) ([]byte, error) {
	for _, d := range append(append([]string(nil), dirs...), imageRoot) {
		p := filepath.Join(d, filepath.FromSlash(rel))
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() || fi.Size() > max {
			return nil, errNoFile
		}
		return os.ReadFile(p)
	}
	return nil, errNoFile
}
