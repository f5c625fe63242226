package workspace

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func paths(m *hacv1.Manifest) []string {
	var out []string
	for _, f := range m.Files {
		out = append(out, f.Path)
	}
	return out
}

func TestWalkHonoursIgnoreFiles(t *testing.T) {
	root := t.TempDir()
	write(t, root, "train.py", "print(1)")
	write(t, root, "data/big.bin", "x")
	write(t, root, "ckpt/a.pt", "x")
	write(t, root, "ckpt/keep.pt", "x")
	write(t, root, "logs/x/y.log", "x")
	write(t, root, ".git/HEAD", "x")
	write(t, root, ".gitignore", "data/\n*.log\n")
	write(t, root, ".hacignore", "# comment\nckpt/*.pt\n!ckpt/keep.pt\n")
	m, err := Walk(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".gitignore", ".hacignore", "ckpt", "ckpt/keep.pt", "logs", "logs/x", "train.py"}
	if got := paths(m); !reflect.DeepEqual(got, want) {
		t.Fatalf("paths = %v, want %v", got, want)
	}
}

// TestWalkHonoursNestedIgnoreFiles: a folder's own .gitignore applies
// below it, relative to it, and overrides its parents'; it does not reach
// its siblings.
func TestWalkHonoursNestedIgnoreFiles(t *testing.T) {
	root := t.TempDir()
	write(t, root, ".gitignore", "*.tmp\n")
	write(t, root, "top.bin", "x")
	write(t, root, "data/.gitignore", "*\n!.gitignore\n!keep.bin\n")
	write(t, root, "data/huge.bin", "x")
	write(t, root, "data/keep.bin", "x")
	write(t, root, "src/.gitignore", "/build\n!wanted.tmp\n")
	write(t, root, "src/build/out.o", "x")
	write(t, root, "src/lib/build/kept.o", "x") // "/build" is anchored to src/
	write(t, root, "src/wanted.tmp", "x")
	write(t, root, "src/other.tmp", "x")
	write(t, root, "other/huge.bin", "x") // data/'s patterns stay in data/
	m, err := Walk(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".gitignore", "data", "data/.gitignore", "data/keep.bin", "other", "other/huge.bin",
		"src", "src/.gitignore", "src/lib", "src/lib/build", "src/lib/build/kept.o", "src/wanted.tmp", "top.bin"}
	if got := paths(m); !reflect.DeepEqual(got, want) {
		t.Fatalf("paths =\n%v\nwant\n%v", got, want)
	}
}

func TestGlob(t *testing.T) {
	for _, tt := range []struct {
		pattern, name string
		want          bool
	}{
		{"a/**/b", "a/b", true}, {"a/**/b", "a/x/y/b", true}, {"**/b", "x/b", true},
		{"a/**", "a/x/y", true}, {"a/*", "a/x/y", false}, {"*.py", "x.py", true},
	} {
		if got := globMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v", tt.pattern, tt.name, got)
		}
	}
}

// TestRoundTrip uploads a tree through a cache, changes it as a program
// would, and checks that exactly the new and changed files are reported.
func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	write(t, src, "a.txt", "alpha")
	write(t, src, "sub/b.txt", "beta")
	write(t, src, "sub/same.txt", "beta") // same content: one blob
	os.Symlink("a.txt", filepath.Join(src, "link"))
	m, err := Walk(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewCache(t.TempDir(), 0)
	missing, release := c.Reserve(m, "1")
	defer release()
	if len(missing) != 2 {
		t.Fatalf("missing = %v, want 2 blobs", missing)
	}
	for _, sum := range missing {
		for _, f := range m.Files {
			if f.Sha256 == sum {
				w, _ := c.Create(sum, "1")
				data, _ := os.ReadFile(filepath.Join(src, f.Path))
				w.Write(data)
				if err := w.Commit(); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
	}
	if again, _ := c.Reserve(m, "1"); len(again) != 0 {
		t.Fatal("a second upload of the same tree would send blobs again")
	}
	dest := t.TempDir()
	if err := c.Materialize(m, dest, -1); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "sub/b.txt")); string(got) != "beta" {
		t.Fatalf("materialized b.txt = %q", got)
	}
	changes, _ := Changes(m, dest)
	if len(changes) != 0 {
		t.Fatalf("untouched tree reports changes %v", changes)
	}
	write(t, dest, "sub/b.txt", "BETA")
	write(t, dest, "out/model.pt", "weights")
	os.Remove(filepath.Join(dest, "a.txt"))
	changes, _ = Changes(m, dest)
	var got []string
	for _, ch := range changes {
		got = append(got, ch.Path)
	}
	if want := []string{"out/model.pt", "sub/b.txt"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("changes = %v, want %v", got, want)
	}
}

func TestCacheRejectsWrongContent(t *testing.T) {
	c, _ := NewCache(t.TempDir(), 0)
	w, _ := c.Create(strings.Repeat("a", 64), "1")
	w.Write([]byte("not that"))
	if err := w.Commit(); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("Commit = %v", err)
	}
}

func TestValidateRejectsEscapes(t *testing.T) {
	sum := strings.Repeat("0", 64)
	for _, files := range [][]*hacv1.FileEntry{
		{{Path: "../x", Sha256: sum}},
		{{Path: "/etc/passwd", Sha256: sum}},
		{{Path: "a/../../x", Sha256: sum}},
		{{Path: "evil", Mode: uint32(fs.ModeSymlink), Link: "/etc"}, {Path: "evil/passwd", Sha256: sum}},
		{{Path: "x", Sha256: "nothex"}},
		{{Path: "x", Sha256: sum}, {Path: "x", Sha256: sum}},
	} {
		if err := Validate(&hacv1.Manifest{Files: files}); err == nil {
			t.Errorf("Validate accepted %v", files)
		}
	}
}

func TestSafeJoin(t *testing.T) {
	root := t.TempDir()
	os.Symlink("/tmp", filepath.Join(root, "out"))
	if _, err := SafeJoin(root, "out/x"); err == nil {
		t.Fatal("SafeJoin wrote through a symlink")
	}
	if p, err := SafeJoin(root, "new/x"); err != nil || p != filepath.Join(root, "new/x") {
		t.Fatalf("SafeJoin = %q, %v", p, err)
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"a/b", "../a", "a//b", "/a", "a/./b", ".", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c, err := CleanPath(p)
		if err != nil {
			return
		}
		if strings.HasPrefix(c, "/") || c == ".." || strings.HasPrefix(c, "../") || bytes.ContainsRune([]byte(c), 0) {
			t.Fatalf("CleanPath(%q) = %q escapes", p, c)
		}
	})
}

func FuzzIgnore(f *testing.F) {
	f.Add("data/\n*.log\n!keep\n/a/**/b", "a/x/b")
	f.Fuzz(func(t *testing.T, patterns, p string) {
		ParseIgnore(strings.NewReader(patterns)).Match(p, false)
	})
}

// put stores content in the cache as a job's upload would.
func put(t *testing.T, c *Cache, content string) string {
	t.Helper()
	sum := fmt.Sprintf("%x", sha256.Sum256([]byte(content)))
	w, err := c.Create(sum, "1")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(content))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestCacheEvictsLeastRecentlyUsed: past its bound the cache drops the
// blobs used longest ago, never one pinned for a job being prepared.
func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	c, _ := NewCache(dir, 250)
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: "a", Mode: 0o644, Size: 100, Sha256: fmt.Sprintf("%x", sha256.Sum256([]byte(strings.Repeat("a", 100))))}}}
	missing, release := c.Reserve(m, "1")
	if len(missing) != 1 {
		t.Fatalf("missing %v", missing)
	}
	a := put(t, c, strings.Repeat("a", 100)) // pinned by the reservation
	b := put(t, c, strings.Repeat("b", 100))
	put(t, c, strings.Repeat("c", 100)) // 300 > 250: b goes, a is pinned
	if !c.Has(a) || c.Has(b) || c.Size() > 250 {
		t.Fatalf("after eviction: a %v b %v size %d", c.Has(a), c.Has(b), c.Size())
	}
	release()
	// Reopening indexes what is there and keeps the bound.
	again, _ := NewCache(dir, 150)
	if again.Size() > 150 {
		t.Fatalf("reopened cache holds %d bytes", again.Size())
	}
}

// TestCacheDropsCorruptBlob: a blob changed behind the cache's back is
// not given to a job and leaves the cache: one an earlier agent left is
// hashed on its first use (same size, other bytes: what a crash can
// leave), one this agent received is checked by size.
func TestCacheDropsCorruptBlob(t *testing.T) {
	dir := t.TempDir()
	c, _ := NewCache(dir, 0)
	sum := put(t, c, "honest content")
	os.WriteFile(c.path(sum), []byte("planted conten"), 0o600) // same size
	reopened, _ := NewCache(dir, 0)
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: "f", Mode: 0o644, Size: 14, Sha256: sum}}}
	if err := reopened.Materialize(m, t.TempDir(), -1); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("a blob left by an earlier agent: Materialize = %v, want ErrHashMismatch", err)
	}
	if reopened.Has(sum) {
		t.Fatal("the corrupt blob is still cached")
	}
	sum = put(t, c, "honest content")
	os.WriteFile(c.path(sum), []byte("truncated"), 0o600)
	if err := c.Materialize(m, t.TempDir(), -1); !errors.Is(err, ErrHashMismatch) || c.Has(sum) {
		t.Fatalf("a truncated blob: Materialize = %v, still cached %v", err, c.Has(sum))
	}
}

// TestChangesStayInside: what a program leaves in its folder (symlinks out
// of it, a FIFO) makes the agent, reading as root, neither leave the
// folder nor wait.
func TestChangesStayInside(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("node secret"), 0o600)
	os.Symlink(outside, filepath.Join(dir, "escape"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An overlay's whiteout (a file the program removed, as its upper
	// folder shows it): a character device 0/0, where root may make one.
	if os.Geteuid() == 0 {
		if err := syscall.Mknod(filepath.Join(dir, "whiteout"), syscall.S_IFCHR|0o600, 0); err != nil {
			t.Fatal(err)
		}
	}
	changes, err := Changes(&hacv1.Manifest{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.Mode&fs.ModeSymlink == 0 {
			t.Errorf("listed %s (%v): only the two symlinks, as links, should be", c.Path, c.Mode)
		}
	}
	root, _ := os.OpenRoot(dir)
	defer root.Close()
	for _, p := range []string{"escape/secret", "link", "fifo", "whiteout"} {
		if f, err := OpenRegular(root, p); err == nil {
			f.Close()
			t.Errorf("OpenRegular(%s) opened it", p)
		}
	}
}

// TestValidateLayer: a server layer's manifest may hold whiteouts (with
// their own mode, and only there); a workspace may not.
func TestValidateLayer(t *testing.T) {
	wo := &hacv1.FileEntry{Path: "usr/gone", Mode: whiteoutMode, Whiteout: true}
	if err := ValidateLayer(&hacv1.Manifest{Files: []*hacv1.FileEntry{wo}}); err != nil {
		t.Errorf("a whiteout in a layer: %v", err)
	}
	if err := Validate(&hacv1.Manifest{Files: []*hacv1.FileEntry{wo}}); err == nil {
		t.Error("a whiteout in a workspace was taken")
	}
	for name, f := range map[string]*hacv1.FileEntry{
		"whiteout flag on a file": {Path: "a", Mode: 0o644, Whiteout: true, Sha256: EmptySum},
		"device without the flag": {Path: "a", Mode: whiteoutMode},
		"a path out of the root":  {Path: "../etc/shadow", Mode: 0o644, Sha256: EmptySum},
		"an absolute path":        {Path: "/etc/shadow", Mode: 0o644, Sha256: EmptySum},
		"a file without its hash": {Path: "a", Mode: 0o644},
	} {
		if err := ValidateLayer(&hacv1.Manifest{Files: []*hacv1.FileEntry{f}}); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
}

// FuzzValidateLayer: a layer's manifest from the network never panics the
// check, and one it takes names only clean paths.
func FuzzValidateLayer(f *testing.F) {
	f.Add("usr/gone", uint32(whiteoutMode), true, "")
	f.Add("a/b", uint32(0o644), false, EmptySum)
	f.Fuzz(func(t *testing.T, p string, mode uint32, whiteout bool, sum string) {
		m := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: p, Mode: mode, Whiteout: whiteout, Sha256: sum}}}
		if ValidateLayer(m) == nil {
			if _, err := CleanPath(p); err != nil {
				t.Fatalf("took %q: %v", p, err)
			}
		}
	})
}

// TestMaterializeRefusesDeclaredSize: a manifest that says a file is
// smaller than its content (so that limits count less than the disk
// takes) is refused; modes are kept whatever the umask.
func TestMaterializeRefusesDeclaredSize(t *testing.T) {
	c, _ := NewCache(t.TempDir(), 0)
	sum := put(t, c, "sixty-four bytes, or so")
	lying := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: "f", Mode: 0o644, Size: 0, Sha256: sum}}}
	if err := c.Materialize(lying, t.TempDir(), -1); err == nil || !strings.Contains(err.Error(), "by its manifest") {
		t.Errorf("a file declared empty: %v", err)
	}
	dst := t.TempDir()
	honest := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: "f", Mode: 0o666, Size: 23, Sha256: sum}}}
	if err := c.Materialize(honest, dst, -1); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "f")); fi == nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("mode %v, want 0666 whatever the umask", fi)
	}
}

// TestCommitAsWrongHashPinsNothing: a blob a client claims changed in
// transit into a hash its bytes do not have is refused, and takes no pin,
// another job's least of all: the other job's blob stays until it lets go.
func TestCommitAsWrongHashPinsNothing(t *testing.T) {
	c, _ := NewCache(t.TempDir(), 1) // any blob not pinned goes at once
	data := []byte("another tenant's weights")
	sum := sha256.Sum256(data)
	victim := hex.EncodeToString(sum[:])
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: "w.bin", Sha256: victim, Size: int64(len(data))}}}
	_, release := c.Reserve(m, "1")
	w, _ := c.Create(victim, "1")
	w.Write(data)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	evil, _ := c.Create(EmptySum, "1")
	evil.Write([]byte("junk"))
	if _, err := evil.CommitAs(victim); err == nil {
		t.Fatal("a blob under a hash its bytes do not have was taken")
	}
	if !c.Has(victim) {
		t.Fatal("the refused blob took the other job's pin: its blob is gone")
	}
	release()
	if c.Has(victim) {
		t.Fatal("the other job's blob stayed pinned after it let go")
	}
}

// TestCacheAnswersOwnersOnly: a node tells a user it has a file's content
// only when that user sent it. Another tenant who names the same hash is
// asked for the content, whether or not it is cached, and cannot replace
// it with other bytes; the cached blob stays pinned while it is awaited.
func TestCacheAnswersOwnersOnly(t *testing.T) {
	data := []byte("the first tenant's secret")
	sum := sha256.Sum256(data)
	name := hex.EncodeToString(sum[:])
	m := &hacv1.Manifest{Files: []*hacv1.FileEntry{{Path: "key", Mode: 0o600, Size: int64(len(data)), Sha256: name}}}
	c, _ := NewCache(t.TempDir(), int64(len(data))) // room for this blob alone
	send := func(owner string, content []byte) error {
		w, _ := c.Create(name, owner)
		w.Write(content)
		return w.Commit()
	}
	missing, release := c.Reserve(m, "alice")
	if len(missing) != 1 {
		t.Fatalf("alice's first upload: missing = %v", missing)
	}
	if err := send("alice", data); err != nil {
		t.Fatal(err)
	}
	release()
	if again, release := c.Reserve(m, "alice"); len(again) != 0 {
		t.Fatalf("alice is asked again for what she sent: %v", again)
	} else {
		release()
	}

	missing, releaseBob := c.Reserve(m, "bob")
	if !slices.Equal(missing, []string{name}) {
		t.Fatalf("bob names a hash the node holds and is not asked for its content: missing = %v", missing)
	}
	// While bob is to send it, another blob past the cap evicts nothing
	// he awaits.
	other := []byte("carol's file")
	osum := sha256.Sum256(other)
	w, _ := c.Create(hex.EncodeToString(osum[:]), "carol")
	w.Write(other)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if !c.Has(name) {
		t.Fatal("a blob bob's reservation awaits was evicted")
	}
	if err := send("bob", []byte("other bytes")); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("bob replaced the content of a hash: %v", err)
	}
	if again, release := c.Reserve(m, "bob"); len(again) != 1 {
		t.Fatalf("a wrong upload made bob an owner: missing = %v", again)
	} else {
		release()
	}
	if err := send("bob", data); err != nil {
		t.Fatal(err)
	}
	releaseBob()
	if !c.Has(name) { // carol's older blob goes first
		t.Fatal("the blob bob sent was evicted before an older one")
	}
	for _, owner := range []string{"alice", "bob"} {
		if again, release := c.Reserve(m, owner); len(again) != 0 {
			t.Fatalf("%s is asked again for what %s sent: %v", owner, owner, again)
		} else {
			release()
		}
	}
	if again, release := c.Reserve(m, "carol"); len(again) != 1 {
		t.Fatalf("carol is told the node holds bob's and alice's file: missing = %v", again)
	} else {
		release()
	}
}
