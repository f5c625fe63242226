package workspace

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// TestSendChunksReadError: a read error midway is not the file's end: no
// last chunk goes, so the receiver keeps nothing of a file cut short, and
// the sender hears ErrUnreadable; a file read whole ends with Last.
func TestSendChunksReadError(t *testing.T) {
	var got []*hacv1.ChangedFile
	send := func(c *hacv1.ChangedFile) error { got = append(got, c); return nil }
	broken := io.MultiReader(strings.NewReader(strings.Repeat("x", ChunkSize+10)), iotest.ErrReader(errors.New("EIO")))
	if err := SendChunks(send, "ckpt.bin", 0o644, broken); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("a read error: %v", err)
	}
	for _, c := range got {
		if c.Last {
			t.Fatalf("a file cut short by a read error was sent as whole")
		}
	}
	got = nil
	if err := SendChunks(send, "ok.txt", 0o644, strings.NewReader("fine")); err != nil || len(got) != 1 || !got[0].Last || string(got[0].Data) != "fine" {
		t.Fatalf("a whole file: %v %+v", err, got)
	}
}
