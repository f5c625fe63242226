package local

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hac-project/hac/internal/idmap"
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
// by base (read-only: the image is every server's, and the overlay writes
// to the upper folder only).
func mountShifted(src, target string, base int) error {
	shift := []idmap.Map{{From: 0, To: base, Count: idRange}}
	return idmap.Mount(src, target, shift, shift)
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
