package workspace

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// treeManifest is a manifest of files put in c, content by path.
func treeManifest(t *testing.T, c *Cache, files map[string]string) *hacv1.Manifest {
	t.Helper()
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: "empty", Mode: uint32(fs.ModeDir | 0o750)}}}
	for p, content := range files {
		m.Files = append(m.Files, &hacv1.FileEntry{Path: p, Mode: 0o640, Size: int64(len(content)), MtimeNs: 1_700_000_000_123_456_789, Sha256: put(t, c, content)})
	}
	m.Files = append(m.Files, &hacv1.FileEntry{Path: "sub/link", Mode: uint32(fs.ModeSymlink | 0o777), Link: "../a"})
	return m
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(x, y)
}

// TestTreesShareUnchangedFiles: the same manifest gets the same tree; a
// changed one a new tree that links every unchanged file and copies only
// the changed one; another owner's tree shares nothing.
func TestTreesShareUnchangedFiles(t *testing.T) {
	c, _ := NewCache(t.TempDir(), 0)
	trees, err := NewTrees(filepath.Join(t.TempDir(), "trees"), c, 0)
	if err != nil {
		t.Fatal(err)
	}
	m1 := treeManifest(t, c, map[string]string{"a": "alpha", "sub/b": "beta", "sub/c": "gamma"})
	d1, rel1, err := trees.Acquire("7", m1)
	if err != nil {
		t.Fatal(err)
	}
	defer rel1()
	// What the job sees: content, mode, mtime, folders and links as sent.
	if got, _ := os.ReadFile(filepath.Join(d1, "sub/b")); string(got) != "beta" {
		t.Fatalf("sub/b = %q", got)
	}
	fi, _ := os.Stat(filepath.Join(d1, "a"))
	if fi.Mode().Perm() != 0o640 || fi.ModTime().UnixNano() != 1_700_000_000_123_456_789 {
		t.Fatalf("a: mode %v, mtime %v", fi.Mode(), fi.ModTime().UnixNano())
	}
	if fi, err := os.Stat(filepath.Join(d1, "empty")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Fatalf("empty folder: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(d1, "sub/link")); l != "../a" {
		t.Fatalf("sub/link -> %q", l)
	}
	// The tree's files are its owner's alone: not the cache's blob (its
	// reads for other jobs would show), not another file of the tree.
	for _, f := range m1.Files {
		if f.Path == "a" && sameFile(t, filepath.Join(d1, "a"), c.path(f.Sha256)) {
			t.Fatal("a tree's file is the cache's blob")
		}
	}
	if changes, err := Changes(m1, d1); err != nil || len(changes) != 0 {
		t.Fatalf("a fresh tree differs from its manifest: %v %v", changes, err)
	}

	again, rel, err := trees.Acquire("7", m1)
	if err != nil || again != d1 {
		t.Fatalf("the same manifest again: %q %v, want %q", again, err, d1)
	}
	rel()

	m2 := treeManifest(t, c, map[string]string{"a": "alpha", "sub/b": "BETA", "sub/c": "gamma"})
	d2, rel2, err := trees.Acquire("7", m2)
	if err != nil {
		t.Fatal(err)
	}
	defer rel2()
	if d2 == d1 || !sameFile(t, filepath.Join(d1, "a"), filepath.Join(d2, "a")) || !sameFile(t, filepath.Join(d1, "sub/c"), filepath.Join(d2, "sub/c")) {
		t.Fatal("a changed manifest: its unchanged files are not the earlier tree's")
	}
	if sameFile(t, filepath.Join(d1, "sub/b"), filepath.Join(d2, "sub/b")) {
		t.Fatal("a changed file shares the earlier tree's")
	}
	if want := int64(len("alpha") + len("beta") + len("gamma") + len("BETA")); trees.Size() != want {
		t.Fatalf("trees hold %d bytes, want %d (each file once)", trees.Size(), want)
	}

	// Two files of one tree with the same content are two inodes.
	m0 := treeManifest(t, c, map[string]string{"x": "same", "y": "same"})
	d0, rel0, err := trees.Acquire("9", m0)
	if err != nil {
		t.Fatal(err)
	}
	defer rel0()
	if sameFile(t, filepath.Join(d0, "x"), filepath.Join(d0, "y")) {
		t.Fatal("two files of one tree are one inode: tar would store a hard link")
	}

	d3, rel3, err := trees.Acquire("8", m1)
	if err != nil {
		t.Fatal(err)
	}
	defer rel3()
	if d3 == d1 || sameFile(t, filepath.Join(d1, "a"), filepath.Join(d3, "a")) {
		t.Fatal("another owner's tree shares a file: its link count would tell")
	}
}

// TestTreesEvictIdle: past the bound, idle trees go (their files with
// them, once no tree holds them), those used longest ago first; a tree in
// use never does.
func TestTreesEvictIdle(t *testing.T) {
	c, _ := NewCache(t.TempDir(), 0)
	dir := filepath.Join(t.TempDir(), "trees")
	trees, _ := NewTrees(dir, c, 20)
	big := strings.Repeat("x", 15)
	mA := treeManifest(t, c, map[string]string{"a": big})
	mB := treeManifest(t, c, map[string]string{"a": big + "y"})
	dA, relA, err := trees.Acquire("1", mA)
	if err != nil {
		t.Fatal(err)
	}
	dB, relB, err := trees.Acquire("1", mB) // 31 bytes: over, but both in use
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dA, dB} {
		if _, err := os.Stat(filepath.Join(d, "a")); err != nil {
			t.Fatalf("a tree in use was evicted: %v", err)
		}
	}
	relA()
	if _, err := os.Stat(dA); err == nil {
		t.Fatal("an idle tree past the bound is still there")
	}
	if trees.Size() != 16 {
		t.Fatalf("size %d after eviction, want 16", trees.Size())
	}
	files, _ := os.ReadDir(filepath.Join(dir, "files"))
	if len(files) != 1 {
		t.Fatalf("%d files kept, want 1 (the evicted tree's went)", len(files))
	}
	relB()
	if _, err := os.Stat(dB); err != nil {
		t.Fatalf("an idle tree within the bound went: %v", err)
	}
	// A new agent starts afresh.
	if _, err := NewTrees(dir, c, 20); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if old, _ := filepath.Glob(dir + ".old-*"); len(old) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("an earlier agent's trees are still there: %v", old)
		}
	}
}

// TestTreesBuildOnce: jobs that start together on the same manifest wait
// for one build.
func TestTreesBuildOnce(t *testing.T) {
	c, _ := NewCache(t.TempDir(), 0)
	trees, _ := NewTrees(filepath.Join(t.TempDir(), "trees"), c, 0)
	m := treeManifest(t, c, map[string]string{"a": "alpha", "b": "beta"})
	var wg sync.WaitGroup
	dirs := make([]string, 8)
	for i := range dirs {
		wg.Go(func() {
			d, rel, err := trees.Acquire("1", m)
			if err != nil {
				t.Error(err)
				return
			}
			defer rel()
			if got, _ := os.ReadFile(filepath.Join(d, "b")); string(got) != "beta" {
				t.Errorf("b = %q", got)
			}
			dirs[i] = d
		})
	}
	wg.Wait()
	for _, d := range dirs {
		if d != dirs[0] {
			t.Fatalf("one manifest, trees %v", dirs)
		}
	}
}

// TestTreesRefuseWhatTheCacheLacks: a file whose blob is not there (or is
// not of its size) fails the tree, leaves nothing, and the next try
// builds anew.
func TestTreesRefuseWhatTheCacheLacks(t *testing.T) {
	c, _ := NewCache(t.TempDir(), 0)
	dir := filepath.Join(t.TempDir(), "trees")
	trees, _ := NewTrees(dir, c, 0)
	m := treeManifest(t, c, map[string]string{"a": "alpha", "b": "beta"})
	for _, f := range m.Files {
		if f.Path == "b" {
			f.Size = 3 // lies
		}
	}
	if _, _, err := trees.Acquire("1", m); err == nil || !strings.Contains(err.Error(), "by its manifest") {
		t.Fatalf("a lying size: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "trees")); len(left) != 0 {
		t.Fatalf("a failed tree left %v", left)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "files")); len(left) != 0 || trees.Size() != 0 {
		t.Fatalf("a failed tree left files %v (%d bytes)", left, trees.Size())
	}
	for _, f := range m.Files {
		if f.Path == "b" {
			f.Size = 4
		}
	}
	if _, rel, err := trees.Acquire("1", m); err != nil {
		t.Fatalf("the honest manifest after a failed one: %v", err)
	} else {
		rel()
	}
}
