package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// budget bounds the bytes of all layers; past it the chains of servers
	// no job holds go, least recently used first (0: no bound).
	budget int64

	mu      sync.Mutex
	servers map[int64]*serverLayers
	seq     int
	bytes   int64 // of all layers on disk
}

// maxDeltas bounds a chain's deltas (overlayfs takes up to 500 layers; each
// costs the job's start a mount).
const maxDeltas = 8

type serverLayers struct {
	mu    sync.Mutex // one preparation at a time; held to read or change chain and shown
	chain []*layer   // base first
	shown map[string]*hacv1.FileEntry
	used  time.Time // last prepared (layerStore.mu)
	// evicted: taken out of layerStore.servers; a preparation that waited
	// for it looks its server up again.
	evicted bool
}

type layer struct {
	dir   string
	bytes int64
	refs  int  // running jobs that mount it (layerStore.mu)
	gone  bool // out of its chain: removed at refs 0
}

func newLayerStore(dir string, cache *workspace.Cache, budget int64) (*layerStore, error) {
	// Chains an earlier agent made are rebuilt from the cache on demand.
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &layerStore{dir: dir, cache: cache, budget: budget, servers: map[int64]*serverLayers{}}, nil
}

// prepare makes the folders that show server's layer m (its blobs are in
// the cache) over the image at imageRoot, top first; owners are the
// server's, uid and gid (the client's) among them, every other but root's
// shown as nobody. covered is the slash-separated folder the job's
// workspace is shown on (empty: none): what the chain holds below it is
// hidden anyway, so its leaving the layer changes nothing. release gives
// the folders back.
func (ls *layerStore) prepare(server int64, m *hacv1.Manifest, uid, gid uint32, imageRoot, covered string) (dirs []string, release func(), err error) {
	var sl *serverLayers
	for {
		ls.mu.Lock()
		sl = ls.servers[server]
		if sl == nil {
			sl = &serverLayers{shown: map[string]*hacv1.FileEntry{}}
			ls.servers[server] = sl
		}
		sl.used = time.Now()
		ls.mu.Unlock()
		sl.mu.Lock()
		if !sl.evicted {
			break
		}
		sl.mu.Unlock()
	}
	defer sl.mu.Unlock()

	want := make(map[string]*hacv1.FileEntry, len(m.Files))
	for _, f := range m.Files {
		want[f.Path] = sanitized(f, uid, gid)
	}
	var changed []*hacv1.FileEntry
	fold := len(sl.chain) == 0 || len(sl.chain) > maxDeltas
	for p, f := range want {
		if old := sl.shown[p]; !sameEntry(old, f) {
			changed = append(changed, f)
			// A mark that goes cannot be taken back by a layer above.
			fold = fold || old != nil && old.Opaque && !f.Opaque
		}
	}
	var removed []string
	kept := map[string]*hacv1.FileEntry{}
	for p, f := range sl.shown {
		switch {
		case want[p] != nil:
		case covered != "" && workspace.UnderAny(p, []string{covered}):
			kept[p] = f // under the workspace: still in the chain, unseen
		default:
			removed = append(removed, p)
			// A path that leaves the layer (a virtualenv no longer active)
			// shows the image again, if it has it: only a new base does
			// that; a whiteout would hide the image's too.
			fold = fold || inImage(imageRoot, p)
		}
	}
	if fold {
		changed, removed = make([]*hacv1.FileEntry, 0, len(want)), nil
		for _, f := range want {
			changed = append(changed, f)
		}
	}
	if fold || len(changed) > 0 || len(removed) > 0 {
		l, err := ls.build(server, withOpaqueContent(changed, want), removed, want)
		if err != nil {
			return nil, nil, err
		}
		if fold {
			ls.drop(sl.chain) // each goes when no job holds it
			sl.chain = nil
		} else {
			for p, f := range kept {
				want[p] = f
			}
		}
		sl.chain = append(sl.chain, l)
		sl.shown = want
	}
	held := append([]*layer(nil), sl.chain...)
	ls.mu.Lock()
	for _, l := range held {
		l.refs++
	}
	ls.evictLocked(server)
	ls.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		dirs = append(dirs, held[i].dir)
	}
	var once sync.Once
	return dirs, func() { once.Do(func() { ls.unhold(held) }) }, nil
}

// evictLocked lets the chains of servers no job holds go, least recently
// used first, while the layers pass the budget; keep's stays.
func (ls *layerStore) evictLocked(keep int64) {
	if ls.budget <= 0 || ls.bytes <= ls.budget {
		return
	}
	type idle struct {
		id   int64
		used time.Time
	}
	var idles []idle
	for id, sl := range ls.servers {
		if id != keep {
			idles = append(idles, idle{id, sl.used})
		}
	}
	sort.Slice(idles, func(i, j int) bool { return idles[i].used.Before(idles[j].used) })
	for _, i := range idles {
		if ls.bytes <= ls.budget {
			return
		}
		sl := ls.servers[i.id]
		if !sl.mu.TryLock() {
			continue // being prepared
		}
		free := true
		for _, l := range sl.chain {
			free = free && l.refs == 0
		}
		if free {
			for _, l := range sl.chain {
				l.gone = true
				ls.removeLocked(l)
			}
			sl.chain, sl.shown, sl.evicted = nil, nil, true
			delete(ls.servers, i.id)
		}
		sl.mu.Unlock()
	}
}

// inImage reports whether the image's root holds rel, resolved without
// following a symlink (the node's own files are not the image's).
func inImage(imageRoot, rel string) bool {
	p := imageRoot
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil || i < len(parts)-1 && !fi.IsDir() {
			return false
		}
	}
	return true
}

func (ls *layerStore) removeLocked(l *layer) {
	os.RemoveAll(l.dir)
	ls.bytes -= l.bytes
}

// withOpaqueContent adds to the changed entries everything below a folder
// among them that is opaque: it hides all the chain holds below it, so its
// layer must hold its whole content.
func withOpaqueContent(changed []*hacv1.FileEntry, want map[string]*hacv1.FileEntry) []*hacv1.FileEntry {
	opaque := map[string]bool{}
	in := make(map[string]bool, len(changed))
	for _, f := range changed {
		in[f.Path] = true
		if f.Opaque {
			opaque[f.Path] = true
		}
	}
	if len(opaque) == 0 {
		return changed
	}
	for p, f := range want {
		if in[p] {
			continue
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if opaque[d] {
				changed = append(changed, f)
				break
			}
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
			ls.removeLocked(l)
		}
	}
}

func (ls *layerStore) unhold(held []*layer) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, l := range held {
		if l.refs--; l.refs == 0 && l.gone {
			ls.removeLocked(l)
		}
	}
}

// sanitized is an entry as the node stores it: no set-uid or set-gid bits,
// owners the server's user, root or nobody.
func sanitized(f *hacv1.FileEntry, uid, gid uint32) *hacv1.FileEntry {
	c := &hacv1.FileEntry{Path: f.Path, Mode: f.Mode &^ uint32(fs.ModeSetuid|fs.ModeSetgid), Sha256: f.Sha256, Link: f.Link,
		MtimeNs: f.MtimeNs, Whiteout: f.Whiteout, Opaque: f.Opaque, Uid: nobody, Gid: nobody}
	if fs.FileMode(f.Mode).IsRegular() && !f.Whiteout {
		c.Size = f.Size // checked against its blob when copied; others take no room
	}
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
	l := &layer{dir: dir}
	for _, f := range entries {
		l.bytes += f.Size
	}
	ls.mu.Lock()
	ls.bytes += l.bytes
	ls.mu.Unlock()
	return l, nil
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
			if err := ls.cache.CopyOut(f.Sha256, p, mode.Perm()|mode&fs.ModeSticky, int(f.Uid), int(f.Gid), f.Size); err != nil {
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

// readShown reads the file rel of a job's root as its overlay shows it:
// resolved down the layers (dirs, top first, then the image's root) one
// component at a time, as overlayfs does: the topmost entry of a name
// decides, a non-folder hides the layers below, an opaque folder too.
// Layers never change once made, and no component is followed through a
// symlink: a layer cannot make the agent read a node file.
func readShown(dirs []string, imageRoot, rel string, max int64) ([]byte, error) {
	layers := append(append([]string(nil), dirs...), imageRoot)
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := filepath.Join(parts[:i+1]...)
		var below []string
		for _, d := range layers {
			fi, err := os.Lstat(filepath.Join(d, p))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if i == len(parts)-1 {
				if !fi.Mode().IsRegular() {
					return nil, errNoFile
				}
				return readNoFollow(filepath.Join(d, p), max)
			}
			if !fi.IsDir() {
				break // a file, symlink or whiteout hides the folders below
			}
			below = append(below, d)
			if isOpaqueDir(filepath.Join(d, p)) {
				break
			}
		}
		if len(below) == 0 {
			return nil, errNoFile
		}
		layers = below
	}
	return nil, errNoFile
}

// readNoFollow reads at most max bytes of the regular file p, refusing a
// symlink in its place.
func readNoFollow(p string, max int64) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, errNoFile
	}
	return io.ReadAll(io.LimitReader(f, max))
}

func isOpaqueDir(p string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}
