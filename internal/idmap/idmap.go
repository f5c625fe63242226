// Package idmap shows a folder elsewhere with its owners shifted (an
// idmapped mount, Linux 5.12; overlayfs takes one as a lower layer from
// 5.19), as a user namespace maps ids. Servers see the image through one
// (their root is a high host uid); jobs see their server's files through
// one (the server's user is the job's uid on the node).
package idmap

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Map shows the on-disk ids From..From+Count-1 as To..To+Count-1.
type Map struct{ From, To, Count int }

// Mount shows the tree src at target (a folder it makes), read-only,
// without set-uid programs or device nodes, with its owners mapped by uids
// and its groups by gids; ids no map names show as nobody.
func Mount(src, target string, uids, gids []Map) error {
	ns, err := New(uids, gids)
	if err != nil {
		return err
	}
	defer ns.Close()
	return ns.Mount(src, target)
}

// Namespace is a user namespace whose maps idmapped mounts take: one for
// many mounts costs one child process.
type Namespace struct{ fd int }

// New makes a Namespace with these maps of uids and gids.
func New(uids, gids []Map) (*Namespace, error) {
	fd, err := userNS(uids, gids)
	if err != nil {
		return nil, err
	}
	return &Namespace{fd: fd}, nil
}

// Close lets the namespace go (mounts made keep it).
func (n *Namespace) Close() { unix.Close(n.fd) }

// Mount is the package's Mount with n's maps.
func (n *Namespace) Mount(src, target string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("idmap: open_tree %s: %w", src, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Userns_fd: uint64(n.fd)}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("idmap: an idmapped mount of %s: %w (needs Linux 5.12 or later, overlayfs over it 5.19, and a file system with idmapped mounts: ext4, xfs, btrfs, tmpfs)", src, err)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("idmap: move_mount to %s: %w", target, err)
	}
	return nil
}

// userNS opens a user namespace with these maps: that of a child made
// for it, which then ends (the descriptor keeps the namespace).
func userNS(uids, gids []Map) (int, error) {
	conv := func(maps []Map) []syscall.SysProcIDMap {
		m := make([]syscall.SysProcIDMap, len(maps))
		for i, x := range maps {
			m[i] = syscall.SysProcIDMap{ContainerID: x.From, HostID: x.To, Size: x.Count}
		}
		return m
	}
	cmd := exec.Command("/bin/sh", "-c", "read x")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: conv(uids), GidMappings: conv(gids)}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return -1, err
	}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("idmap: make a user namespace: %w", err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("idmap: open the user namespace: %w", err)
	}
	return fd, nil
}

// Swap maps the ids 0-65535 to themselves but one, from, which shows as
// to (65536 or more, so that the ranges do not overlap): a server's user's
// files as a job's uid.
func Swap(from, to int) []Map {
	const n = 65536
	var out []Map
	if from > 0 {
		out = append(out, Map{From: 0, To: 0, Count: from})
	}
	out = append(out, Map{From: from, To: to, Count: 1})
	if from+1 < n {
		out = append(out, Map{From: from + 1, To: from + 1, Count: n - from - 1})
	}
	return out
}
