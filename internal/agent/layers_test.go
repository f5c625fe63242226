package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

// layerFixture is a layer store over a cache that holds the given files'
// contents.
func layerFixture(t *testing.T, contents ...string) (*layerStore, map[string]string) {
	if os.Geteuid() != 0 {
		t.Skip("layers keep owners and make whiteouts: needs root")
	}
	dir := t.TempDir()
	cache, err := workspace.NewCache(filepath.Join(dir, "blobs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, c := range contents {
		raw := sha256.Sum256([]byte(c))
		sum := hex.EncodeToString(raw[:])
		w, err := cache.Create(sum, "1")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(c))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		sums[c] = sum
	}
	ls, err := newLayerStore(filepath.Join(dir, "layers"), cache, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ls, sums
}

func dirEntry(p string, uid uint32) *hacv1.FileEntry {
	return &hacv1.FileEntry{Path: p, Mode: uint32(fs.ModeDir | 0o755), Uid: uid, Gid: uid}
}

func fileEntry(p, sum string, size int64, uid uint32, mode fs.FileMode) *hacv1.FileEntry {
	return &hacv1.FileEntry{Path: p, Mode: uint32(mode), Sha256: sum, Size: size, Uid: uid, Gid: uid, MtimeNs: 1e18}
}

// TestLayersShipOnlyChanges: the first run makes a base, an unchanged one
// nothing, a changed file a delta of that file, a removed one a whiteout;
// owners other than root and the server's user become nobody, set-uid bits
// go; a long chain folds into a new base, and a layer goes once no job
// holds it.
func TestLayersShipOnlyChanges(t *testing.T) {
	ls, sums := layerFixture(t, "one", "two", "three")
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{
		dirEntry("home", 0), dirEntry("home/u", 1000),
		fileEntry("home/u/a", sums["one"], 3, 1000, 0o4755),
		fileEntry("home/u/b", sums["two"], 3, 1234, 0o644),
		{Path: "usr/gone", Mode: uint32(fs.ModeDevice | fs.ModeCharDevice), Whiteout: true},
	}}
	dirs, release1, err := ls.prepare(7, m, 1000, 1000, t.TempDir(), "")
	if err != nil || len(dirs) != 1 {
		t.Fatalf("first: %v %v", dirs, err)
	}
	a, err := os.Stat(filepath.Join(dirs[0], "home/u/a"))
	if err != nil || a.Mode() != 0o755 || owner(a) != 1000 {
		t.Fatalf("a: %v %v (owner %d)", a, err, owner(a))
	}
	if b, _ := os.Stat(filepath.Join(dirs[0], "home/u/b")); b == nil || owner(b) != nobody {
		t.Errorf("b's owner: want nobody")
	}
	if w, err := os.Lstat(filepath.Join(dirs[0], "usr/gone")); err != nil || w.Mode()&fs.ModeCharDevice == 0 {
		t.Errorf("whiteout: %v %v", w, err)
	}
	again, release2, err := ls.prepare(7, m, 1000, 1000, t.TempDir(), "")
	if err != nil || len(again) != 1 || again[0] != dirs[0] {
		t.Fatalf("unchanged: %v %v, want %v", again, err, dirs)
	}
	release2()
	// b changes, a goes.
	m2 := &hacv1.Manifest{Files: []*hacv1.FileEntry{
		dirEntry("home", 0), dirEntry("home/u", 1000),
		fileEntry("home/u/b", sums["three"], 5, 1000, 0o644),
		{Path: "usr/gone", Mode: uint32(fs.ModeDevice | fs.ModeCharDevice), Whiteout: true},
	}}
	dirs2, release3, err := ls.prepare(7, m2, 1000, 1000, t.TempDir(), "")
	if err != nil || len(dirs2) != 2 || dirs2[1] != dirs[0] {
		t.Fatalf("a delta over the base: %v %v", dirs2, err)
	}
	entries := walkAll(t, dirs2[0])
	if len(entries) != 4 || entries["home/u/b"] == "" || entries["home/u/a"] != "whiteout" {
		t.Fatalf("the delta holds %v, want the folders, b and a's whiteout", entries)
	}
	if got, err := readShown(dirs2, t.TempDir(), "home/u/b", 100); err != nil || string(got) != "three" {
		t.Errorf("readShown b: %q %v", got, err)
	}
	if _, err := readShown(dirs2, t.TempDir(), "home/u/a", 100); err == nil {
		t.Error("readShown found a removed file")
	}
	// Past maxDeltas, a new base; the old layers stay while held.
	var last []string
	for i := 0; i <= maxDeltas+1; i++ {
		mode := fs.FileMode(0o644)
		if i%2 == 0 {
			mode = 0o600
		}
		mi := &hacv1.Manifest{Files: []*hacv1.FileEntry{dirEntry("home", 0), fileEntry("home/x", sums["one"], 3, 0, mode)}}
		d, rel, err := ls.prepare(7, mi, 1000, 1000, t.TempDir(), "")
		if err != nil {
			t.Fatal(err)
		}
		rel()
		last = d
	}
	if len(last) > maxDeltas+1 {
		t.Errorf("the chain has %d layers, past %d", len(last), maxDeltas+1)
	}
	if _, err := os.Stat(dirs[0]); err != nil {
		t.Errorf("a held layer was removed: %v", err)
	}
	release1()
	release3()
	if _, err := os.Stat(dirs[0]); err == nil {
		t.Error("a folded layer stayed once no job held it")
	}
}

func owner(fi fs.FileInfo) uint32 {
	if fi == nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

func walkAll(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeCharDevice != 0:
			out[rel] = "whiteout"
		case d.IsDir():
			out[rel] = "dir"
		default:
			raw, _ := os.ReadFile(p)
			out[rel] = string(raw)
		}
		return nil
	})
	return out
}

// TestFitsCache: files past the node's cache are refused with their size,
// the cache's, and the largest folders.
func TestFitsCache(t *testing.T) {
	cache, err := workspace.NewCache(t.TempDir(), 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cache: cache}
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{
		{Path: "home/u/.local/lib/python3.11/site-packages/torch/lib/libtorch.so", Size: 9 << 20},
		{Path: "opt/conda/lib/libmkl.so", Size: 3 << 20},
		{Path: "small.txt", Size: 1},
	}}
	err = a.fitsCache(m)
	for _, want := range []string{"12.0 MiB", "10.0 MiB", "home/u/.local (9.0 MiB)", "opt/conda/lib (3.0 MiB)", ".hacignore"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want %q in it", err, want)
		}
	}
	if err := a.fitsCache(&hacv1.Manifest{Files: m.Files[1:]}); err != nil {
		t.Errorf("3 MiB in a 10 MiB cache: %v", err)
	}
}

// TestLayersOpaque: a folder the server removed and made again hides the
// image's: marked opaque in the layer that brings it, with its whole
// content; a later change below it does not mark it again.
func TestLayersOpaque(t *testing.T) {
	ls, sums := layerFixture(t, "one", "two")
	dir := &hacv1.FileEntry{Path: "usr/lib/pkg", Mode: uint32(fs.ModeDir | 0o755), Opaque: true}
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{dirEntry("usr", 0), dirEntry("usr/lib", 0), dir,
		fileEntry("usr/lib/pkg/a.py", sums["one"], 3, 0, 0o644), fileEntry("home", sums["two"], 3, 0, 0o644)}}
	// First without the mark, then with it: the delta holds the folder whole.
	plain := &hacv1.Manifest{Files: []*hacv1.FileEntry{dirEntry("usr", 0), dirEntry("usr/lib", 0), dirEntry("usr/lib/pkg", 0),
		fileEntry("usr/lib/pkg/a.py", sums["one"], 3, 0, 0o644), fileEntry("home", sums["two"], 3, 0, 0o644)}}
	_, r1, err := ls.prepare(3, plain, 1000, 1000, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	r1()
	dirs, r2, err := ls.prepare(3, m, 1000, 1000, t.TempDir(), "")
	if err != nil || len(dirs) != 2 {
		t.Fatalf("%v %v", dirs, err)
	}
	r2()
	if !isOpaqueDir(filepath.Join(dirs[0], "usr/lib/pkg")) {
		t.Error("the delta's folder is not marked opaque")
	}
	if got := walkAll(t, dirs[0]); got["usr/lib/pkg/a.py"] != "one" || got["home"] != "" {
		t.Errorf("the delta holds %v, want the opaque folder whole and nothing else", got)
	}
	m.Files[3] = fileEntry("usr/lib/pkg/a.py", sums["two"], 3, 0, 0o644)
	dirs, r3, err := ls.prepare(3, m, 1000, 1000, t.TempDir(), "")
	if err != nil || len(dirs) != 3 {
		t.Fatalf("%v %v", dirs, err)
	}
	r3()
	if isOpaqueDir(filepath.Join(dirs[0], "usr/lib/pkg")) {
		t.Error("a change below an opaque folder marked it again, hiding the layers below")
	}
}

// TestLayersLeavingShowsImage: a path that leaves the layer (a virtualenv
// no longer active) shows the image again: a new base, not a whiteout that
// would hide the image's /usr too. A build that fails keeps the chain.
func TestLayersLeavingShowsImage(t *testing.T) {
	ls, sums := layerFixture(t, "one")
	image := t.TempDir()
	os.MkdirAll(filepath.Join(image, "usr/bin"), 0o755)
	venv := &hacv1.Manifest{Files: []*hacv1.FileEntry{dirEntry("usr", 0), dirEntry("usr/local", 0), dirEntry("usr/local/venv", 1000),
		fileEntry("usr/local/venv/a.py", sums["one"], 3, 1000, 0o644)}}
	first, r1, err := ls.prepare(5, venv, 1000, 1000, image, "")
	if err != nil {
		t.Fatal(err)
	}
	r1()
	// A build that fails (a blob the cache lacks) changes nothing.
	bad := &hacv1.Manifest{Files: []*hacv1.FileEntry{fileEntry("home", strings.Repeat("0", 64), 3, 0, 0o644)}}
	if _, _, err := ls.prepare(5, bad, 1000, 1000, image, ""); err == nil {
		t.Fatal("a layer of a missing blob was made")
	}
	again, r2, err := ls.prepare(5, venv, 1000, 1000, image, "")
	if err != nil || len(again) != 1 || again[0] != first[0] {
		t.Fatalf("after a failed build: %v %v, want the chain %v", again, err, first)
	}
	r2()
	empty, r3, err := ls.prepare(5, &hacv1.Manifest{}, 1000, 1000, image, "")
	if err != nil {
		t.Fatal(err)
	}
	defer r3()
	if len(empty) != 1 || len(walkAll(t, empty[0])) != 0 {
		t.Errorf("leaving the layer made %v holding %v, want one empty base", empty, walkAll(t, empty[0]))
	}
}

// TestLayersBudget: past the budget, the chains of servers no job holds
// go, least recently used first; held ones stay.
func TestLayersBudget(t *testing.T) {
	ls, sums := layerFixture(t, "one")
	ls.budget = 4
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{fileEntry("a", sums["one"], 3, 0, 0o644)}}
	d1, r1, err := ls.prepare(1, m, 1000, 1000, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	d2, r2, err := ls.prepare(2, m, 1000, 1000, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d1[0]); err != nil {
		t.Fatal("a held chain was evicted")
	}
	r1()
	r2()
	d3, r3, err := ls.prepare(3, m, 1000, 1000, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r3()
	if _, err := os.Stat(d1[0]); err == nil {
		t.Error("the least recently used idle chain stayed past the budget")
	}
	if _, err := os.Stat(d3[0]); err != nil {
		t.Error("the chain just made was evicted")
	}
	_ = d2
}

// TestReadShownStaysInside: a layer whose etc was a symlink to a node
// folder, under a layer whose etc is a folder, does not make the agent
// read the node's file: overlayfs shows the folder alone, and so does
// readShown; a symlinked passwd is not followed either.
func TestReadShownStaysInside(t *testing.T) {
	node := t.TempDir()
	os.WriteFile(filepath.Join(node, "passwd"), []byte("NODE-SECRET\n"), 0o600)
	base, delta, image := t.TempDir(), t.TempDir(), t.TempDir()
	os.Symlink(node, filepath.Join(base, "etc"))
	os.MkdirAll(filepath.Join(delta, "etc"), 0o755)
	os.WriteFile(filepath.Join(delta, "etc/motd"), []byte("hi\n"), 0o644)
	os.MkdirAll(filepath.Join(image, "etc"), 0o755)
	os.WriteFile(filepath.Join(image, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	if got, err := readShown([]string{delta, base}, image, "etc/passwd", 1<<20); err == nil {
		t.Errorf("read %q through a lower layer's symlink", got)
	}
	os.Symlink(filepath.Join(node, "passwd"), filepath.Join(delta, "etc/passwd"))
	if got, err := readShown([]string{delta}, image, "etc/passwd", 1<<20); err == nil {
		t.Errorf("read %q through a symlinked passwd", got)
	}
	if got, err := readShown(nil, image, "etc/passwd", 1<<20); err != nil || !strings.HasPrefix(string(got), "root:") {
		t.Errorf("the image's passwd: %q %v", got, err)
	}
}

// TestLayersEvictionUnderLoad: servers prepared at once past a tiny budget
// never get a chain that eviction removed, and when every job is done the
// store's count and its folders agree (a stale record leaked layers and
// counted them twice; found by review). A symlink's declared size takes no
// room.
func TestLayersEvictionUnderLoad(t *testing.T) {
	ls, sums := layerFixture(t, "one")
	ls.budget = 1
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				m := &hacv1.Manifest{Files: []*hacv1.FileEntry{fileEntry("a", sums["one"], 3, 0, 0o644),
					{Path: "l", Mode: uint32(fs.ModeSymlink | 0o777), Link: "a", Size: 1 << 40}}}
				dirs, release, err := ls.prepare(int64(i%5), m, 1000, 1000, t.TempDir(), "")
				if err != nil {
					t.Error(err)
					return
				}
				for _, d := range dirs {
					if _, err := os.Stat(d); err != nil {
						t.Errorf("a chain handed out without its folder: %v", err)
					}
				}
				release()
			}
		}()
	}
	wg.Wait()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var inChains int64
	folders := 0
	for _, sl := range ls.servers {
		for _, l := range sl.chain {
			inChains += l.bytes
			folders++
		}
	}
	onDisk, _ := filepath.Glob(filepath.Join(ls.dir, "*", "*"))
	if ls.bytes != inChains || len(onDisk) != folders || ls.bytes < 0 {
		t.Errorf("bytes %d, in chains %d; folders on disk %d, in chains %d", ls.bytes, inChains, len(onDisk), folders)
	}
}

// TestLayersCoveredByWorkspace: what leaves the layer below the job's
// workspace (the user now runs from that folder) changes nothing: no new
// base, no whiteout.
func TestLayersCoveredByWorkspace(t *testing.T) {
	ls, sums := layerFixture(t, "one")
	image := t.TempDir()
	os.MkdirAll(filepath.Join(image, "home/u"), 0o755)
	all := &hacv1.Manifest{Files: []*hacv1.FileEntry{dirEntry("home", 0), dirEntry("home/u", 1000), fileEntry("home/u/x", sums["one"], 3, 1000, 0o644)}}
	d1, r1, err := ls.prepare(9, all, 1000, 1000, image, "")
	if err != nil {
		t.Fatal(err)
	}
	r1()
	d2, r2, err := ls.prepare(9, &hacv1.Manifest{Files: all.Files[:1]}, 1000, 1000, image, "home/u")
	if err != nil {
		t.Fatal(err)
	}
	r2()
	if len(d2) != 1 || d2[0] != d1[0] {
		t.Errorf("running from home/u made %v, want the chain %v as it was", d2, d1)
	}
}

// TestAccountRefusesInjection: a client's user name or home that would add
// a line or a field to the job's /etc/passwd is replaced.
func TestAccountRefusesInjection(t *testing.T) {
	for _, tc := range []struct{ user, home, wantUser, wantHome string }{
		{"alice", "/home/alice", "alice", "/home/alice"},
		{"root:x:0:0::/:/bin/sh\nevil", "/home/a", jobUser, "/home/a"},
		{"bob", "/home/b:/bin/sh\nroot::0:0::/:/bin/sh", "bob", "/tmp"},
		{"Bob", "relative", jobUser, "/tmp"},
		{"a", "/home/../etc", "a", "/tmp"},
	} {
		u, h := account(&hacv1.Environment{User: tc.user, Home: tc.home})
		if u != tc.wantUser || h != tc.wantHome {
			t.Errorf("%q %q: %q %q, want %q %q", tc.user, tc.home, u, h, tc.wantUser, tc.wantHome)
		}
	}
}
