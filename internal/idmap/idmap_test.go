package idmap

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMountSwap: a file owned by 1000 shows as the given uid, root's stays
// root's.
func TestMountSwap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("idmapped mounts need root")
	}
	src, target := t.TempDir(), filepath.Join(t.TempDir(), "view")
	os.WriteFile(filepath.Join(src, "user"), []byte("u"), 0o600)
	os.Chown(filepath.Join(src, "user"), 1000, 1000)
	os.WriteFile(filepath.Join(src, "root"), []byte("r"), 0o600)
	os.Chown(filepath.Join(src, "user"), 1000, 1001)
	if err := Mount(src, target, Swap(1000, 3_000_123), Swap(1001, 3_000_124)); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(target, syscall.MNT_DETACH)
	for name, want := range map[string][2]uint32{"user": {3_000_123, 3_000_124}, "root": {0, 0}} {
		fi, err := os.Stat(filepath.Join(target, name))
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != want[0] || fi.Sys().(*syscall.Stat_t).Gid != want[1] {
			t.Errorf("%s: %v %v, want uid and gid %v", name, fi, err, want)
		}
	}
}
