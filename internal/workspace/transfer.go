package workspace

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// ChunkSize is the data one ChangedFile message carries at most.
const ChunkSize = 256 << 10

// ErrUnreadable means a changed file could not be read whole: its chunks
// went without a last one, so the receiver (SyncBack) drops what came,
// and the sender tries again later.
var ErrUnreadable = errors.New("workspace: the file could not be read")

// SendChanged sends one changed file of dir in chunks, one ChangedFile a
// chunk; the last (empty when the file ends on a chunk's boundary) has
// Last set. The file is read through an os.Root: the program owns the
// folder and may have replaced anything in it by a symlink or a FIFO
// since it was listed; a file gone meanwhile is skipped.
func SendChanged(send func(*hacv1.ChangedFile) error, dir string, c Change) error {
	if c.Mode&fs.ModeSymlink != 0 {
		return send(&hacv1.ChangedFile{Path: c.Path, Mode: uint32(c.Mode), Link: c.Link, First: true, Last: true})
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil
	}
	defer root.Close()
	f, err := OpenRegular(root, c.Path)
	if err != nil {
		return nil // removed or replaced since it was listed
	}
	defer f.Close()
	return SendChunks(send, c.Path, c.Mode.Perm(), f)
}

// SendChunks sends what r holds as the changed file path. A read error is
// not the file's end: no last chunk goes, and it returns ErrUnreadable.
func SendChunks(send func(*hacv1.ChangedFile) error, path string, perm fs.FileMode, r io.Reader) error {
	buf := make([]byte, ChunkSize)
	for first := true; ; first = false {
		n, err := io.ReadFull(r, buf)
		last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !last {
			return fmt.Errorf("%w: %s: %v", ErrUnreadable, path, err)
		}
		if err := send(&hacv1.ChangedFile{Path: path, Mode: uint32(perm), Data: buf[:n], First: first, Last: last}); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}
