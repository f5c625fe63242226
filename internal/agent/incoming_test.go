package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

func sumOf(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

// blobs is a client's side of a blob exchange, message by message.
func blobs(msgs ...*hacv1.Blob) func() (*hacv1.ExecRequest, error) {
	return func() (*hacv1.ExecRequest, error) {
		if len(msgs) == 0 {
			return &hacv1.ExecRequest{Msg: &hacv1.ExecRequest_BlobsDone{BlobsDone: true}}, nil
		}
		b := msgs[0]
		msgs = msgs[1:]
		if b == nil {
			return nil, io.ErrUnexpectedEOF
		}
		return &hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Blob{Blob: b}}, nil
	}
}

// TestReceiveBlobsChecksTheClient: what a node takes in of a workspace is
// what it asked, as the manifest declared it: a blob not asked, a chunk of
// another blob amid one, a blob past its declared size and a change in
// transit for a path that did not name the blob are refused; a change for
// one entry leaves the other entries of the same content (the same path
// in the workspace and the server's layer too) owed, and is used for that
// entry only.
func TestReceiveBlobsChecksTheClient(t *testing.T) {
	old, changed := "print(1)\n", "print(22)\n"
	entry := func(path, content string) *hacv1.FileEntry {
		return &hacv1.FileEntry{Path: path, Sha256: sumOf(content), Size: int64(len(content)), Mode: 0o644}
	}
	setup := func(t *testing.T) (*workspace.Cache, *incoming) {
		cache, err := workspace.NewCache(t.TempDir(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		work := &hacv1.Manifest{Files: []*hacv1.FileEntry{entry("train.py", old)}}
		layer := &hacv1.Manifest{Files: []*hacv1.FileEntry{entry("train.py", old)}}
		return cache, newIncoming("1", work, layer, []string{sumOf(old)})
	}
	for _, c := range []struct {
		name string
		msgs []*hacv1.Blob
		want string
	}{
		{"not asked", []*hacv1.Blob{{Sha256: sumOf("x"), Data: []byte("x"), Last: true}}, "was not asked for"},
		{"mixed chunks", []*hacv1.Blob{{Sha256: sumOf(old), Data: []byte("pr")}, {Sha256: sumOf("x"), Data: []byte("x"), Last: true}}, "was not whole"},
		{"past its size", []*hacv1.Blob{{Sha256: sumOf(old), Data: []byte(old + "more"), Last: true}}, "longer than its declared"},
		{"changed, another path", []*hacv1.Blob{{Sha256: sumOf(old), Data: []byte("print(2)\n"), Last: true, ChangedTo: sumOf("print(2)\n"), ChangedPath: "other.py"}}, "not as a path of it"},
		{"wrong content", []*hacv1.Blob{{Sha256: sumOf(old), Data: []byte("print(2)\n"), Last: true}}, "hash"},
		{"not sent", nil, "were not sent"},
		{"cut off", []*hacv1.Blob{{Sha256: sumOf(old), Data: []byte("pr")}, nil}, "unexpected EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache, in := setup(t)
			err := in.receive(cache, blobs(c.msgs...))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
		})
	}

	t.Run("changed in the workspace only", func(t *testing.T) {
		cache, in := setup(t)
		short := changed[:len(old)] // what was read of it, up to the declared size
		err := in.receive(cache, blobs(
			&hacv1.Blob{Sha256: sumOf(old), Data: []byte(short), Last: true, ChangedTo: sumOf(short), ChangedPath: "train.py"},
			&hacv1.Blob{Sha256: sumOf(old), Data: []byte(old), Last: true}, // the layer's, as listed
		))
		if err != nil {
			t.Fatal(err)
		}
		if c := in.changed[entryKey{entryPath{false, "train.py"}, sumOf(old)}]; c.sum != sumOf(short) {
			t.Fatalf("the workspace's entry: %+v", in.changed)
		}
		if _, ok := in.changed[entryKey{entryPath{true, "train.py"}, sumOf(old)}]; ok || len(in.changed) != 1 {
			t.Fatalf("the layer's entry changed too: %+v", in.changed)
		}
	})
	t.Run("the other entry still owed", func(t *testing.T) {
		cache, in := setup(t)
		short := changed[:len(old)]
		err := in.receive(cache, blobs(
			&hacv1.Blob{Sha256: sumOf(old), Data: []byte(short), Last: true, ChangedTo: sumOf(short), ChangedPath: "train.py", ChangedInLayer: true},
		))
		if err == nil || !strings.Contains(err.Error(), "were not sent") {
			t.Fatalf("the workspace's entry was taken as served: %v", err)
		}
	})
}
