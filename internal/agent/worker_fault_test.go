package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"syscall"
	"testing"

	"github.com/hac-project/hac/internal/workspace"
)

// TestOnlyTheNodesFailuresAreFaults: a transfer the client broke (a
// stream it closed, a protocol it did not keep, bytes that are not their
// hash) is not an infrastructure fault, so that a client cannot make its
// run free; the node's disk refusing a write is.
func TestOnlyTheNodesFailuresAreFaults(t *testing.T) {
	for _, c := range []struct {
		err   error
		fault bool
	}{
		{io.EOF, false},
		{errors.New("protocol error: expected blobs"), false},
		{fmt.Errorf("blob x is longer than its declared 3 bytes"), false},
		{fmt.Errorf("%w abc", workspace.ErrHashMismatch), false},
		{&fs.PathError{Op: "write", Path: "/var/lib/hac/blobs/x", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("commit: %w", &fs.PathError{Op: "rename", Path: "x", Err: syscall.EROFS}), true},
	} {
		if got := nodeFailed(c.err); got != c.fault {
			t.Errorf("nodeFailed(%v) = %v, want %v", c.err, got, c.fault)
		}
	}
}
