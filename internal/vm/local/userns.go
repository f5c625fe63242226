package local

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Servers run in a user namespace: their uids and gids 0-65535 are the
// host's IDBase to IDBase+65535, so that a server's root is not the
// host's root. All servers share the range, as Docker's userns-remap does;
// their processes are kept apart by their other namespaces. The image is
// shown to them through an idmapped mount (owners shifted by IDBase; the
// image itself is shared and unchanged), under the overlay whose upper
// folder, on the server's own disk, then stores shifted owners.

// DefaultIDBase is the first host uid and gid of servers' user namespaces.
const DefaultIDBase = 2000000

// idRange is how many uids and gids a server's user namespace maps.
const idRange = 65536

// idBaseOf returns the host id of a server's root, or -1 for a server made
// before user namespaces (it runs as before).
func (d *Driver) idBaseOf(id string) int {
	raw, err := os.ReadFile(filepath.Join(d.dir(id), "idbase"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return -1
	}
	return n
}

// mountShifted mounts the tree at src on target with its owners shifted
// by base (an idmapped mount, Linux 5.12 and later; overlayfs takes it as
// a lower layer from Linux 5.19).
func mountShifted(src, target string, base int) error {
	ns, err := usernsFD(base)
	if err != nil {
		return err
	}
	defer unix.Close(ns)
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("vm/local: open_tree %s: %w", src, err)
	}
	defer unix.Close(tree)
	// Read-only: the image is every server's, and the overlay writes to
	// the upper folder only.
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Userns_fd: uint64(ns)}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("vm/local: an idmapped mount of %s: %w (needs Linux 5.12 or later, overlayfs over it 5.19, and a data folder on a file system with idmapped mounts: ext4, xfs, btrfs, tmpfs)", src, err)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("vm/local: move_mount to %s: %w", target, err)
	}
	return nil
}

// usernsFD opens a user namespace that maps 0-65535 to base: that of a
// child made for it, which then ends (the descriptor keeps it alive).
func usernsFD(base int) (int, error) {
	cmd := exec.Command("/bin/sh", "-c", "read x")
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: idRange}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: m, GidMappings: m}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return -1, err
	}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("vm/local: make a user namespace: %w", err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("vm/local: open the user namespace: %w", err)
	}
	return fd, nil
}

// shiftOwner is chown with the owner moved into a server's range (base
// -1: the server has no user namespace, ids stay).
func shiftOwner(path string, uid, gid, base int) error {
	if base >= 0 {
		if uid < 0 || uid >= idRange || gid < 0 || gid >= idRange {
			return errors.New("vm/local: a server's file owner must be below 65536")
		}
		uid, gid = uid+base, gid+base
	}
	return os.Lchown(path, uid, gid)
}
