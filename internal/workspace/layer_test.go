package workspace

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"golang.org/x/sys/unix"
)

// TestWalkLayer: a layer's folders, files and symlinks come with their
// owners, 0:0 character devices as whiteouts, other devices not at all,
// and skipped folders with nothing below them.
func TestWalkLayer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("whiteouts are made with mknod: needs root")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "home/u/.local"), 0o755)
	os.WriteFile(filepath.Join(root, "home/u/.local/m.py"), []byte("X = 1\n"), 0o644)
	os.Chown(filepath.Join(root, "home/u/.local/m.py"), 1000, 1001)
	os.Symlink("m.py", filepath.Join(root, "home/u/.local/link.py"))
	syscall.Mknod(filepath.Join(root, "home/gone"), syscall.S_IFCHR, 0)
	syscall.Mknod(filepath.Join(root, "home/null"), syscall.S_IFCHR|0o666, int(1<<8|3))
	os.MkdirAll(filepath.Join(root, "tmp/x"), 0o755)
	os.MkdirAll(filepath.Join(root, "home/again"), 0o755)
	if err := unix.Lsetxattr(filepath.Join(root, "home/again"), "user.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	m, err := WalkLayer(root, func(rel string, _ bool) bool { return UnderAny(rel, []string{"tmp"}) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range m.Files {
		kind := "file"
		switch {
		case f.Whiteout:
			kind = "whiteout"
		case f.Opaque:
			kind = "opaque"
		case fs.FileMode(f.Mode).IsDir():
			kind = "dir"
		case f.Link != "":
			kind = "link:" + f.Link
		}
		got[f.Path] = kind
		if f.Path == "home/u/.local/m.py" && (f.Uid != 1000 || f.Gid != 1001 || f.Sha256 == "") {
			t.Errorf("m.py: %+v", f)
		}
	}
	want := map[string]string{"home": "dir", "home/u": "dir", "home/u/.local": "dir", "home/u/.local/m.py": "file",
		"home/u/.local/link.py": "link:m.py", "home/gone": "whiteout", "home/again": "opaque"}
	if len(got) != len(want) {
		t.Fatalf("walked %v, want %v", got, want)
	}
	for p, k := range want {
		if got[p] != k {
			t.Errorf("%s: %q, want %q", p, got[p], k)
		}
	}
	if err := ValidateLayer(m); err != nil {
		t.Errorf("the walk's own manifest: %v", err)
	}
}

// TestWalkUnreadable: a file or folder the caller may not read is listed
// with its mode and no content, in a workspace and in a layer, once. As
// root, the walks run on a thread whose effective uid is nobody's.
func TestWalkUnreadable(t *testing.T) {
	root, err := os.MkdirTemp("", "unreadable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(root, "closed"), 0o755); os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	os.WriteFile(filepath.Join(root, "secret"), []byte("x"), 0o000)
	os.MkdirAll(filepath.Join(root, "closed/inner"), 0o755)
	os.Chmod(filepath.Join(root, "closed"), 0o000)
	asNobody := func(f func()) { f() }
	if os.Geteuid() == 0 {
		asNobody = func(f func()) {
			// This thread only (credentials are per thread; syscall.Setresuid
			// would change every thread's), and back before it is let go.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
				t.Fatal(e)
			}
			defer syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0))
			f()
		}
	}
	for name, walk := range map[string]func() (*hacv1.Manifest, error){
		"workspace": func() (*hacv1.Manifest, error) { return Walk(root, nil) },
		"layer":     func() (*hacv1.Manifest, error) { return WalkLayer(root, func(string, bool) bool { return false }, nil) },
	} {
		var m *hacv1.Manifest
		var err error
		asNobody(func() { m, err = walk() })
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m.Files) != 2 {
			t.Fatalf("%s: %v, want secret and closed", name, m.Files)
		}
		for _, f := range m.Files {
			if f.Path == "secret" && (f.Sha256 != EmptySum || f.Size != 0) {
				t.Errorf("%s: secret %+v", name, f)
			}
		}
	}
}
