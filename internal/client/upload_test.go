package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

func sumOf(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestUploadFileChangingMeanwhile: a file that grows after it was listed
// (a log) goes as listed, with no warning; one rewritten meanwhile goes
// as read, under its new hash for its own path, and the content it had is
// sent again from another file that still holds it.
func TestUploadFileChangingMeanwhile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) { os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644) }
	write("train.log", "epoch 1\n")
	write("a.cfg", "lr=1\n")
	write("b.cfg", "lr=1\n") // same content as a.cfg
	m, err := workspace.Walk(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile: the log grows, a.cfg is rewritten.
	f, _ := os.OpenFile(filepath.Join(dir, "train.log"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("epoch 2\n")
	f.Close()
	write("a.cfg", "lr=2\n")

	var want []string
	for _, e := range m.Files {
		if e.Sha256 != "" && !slices.Contains(want, e.Sha256) {
			want = append(want, e.Sha256)
		}
	}
	u, err := PlanUpload([]BlobSource{{Root: dir, Manifest: m}}, want)
	if err != nil {
		t.Fatal(err)
	}
	type sent struct {
		sum, changedTo, path string
		data                 []byte
	}
	var blobs []sent
	var cur bytes.Buffer
	err = u.Send(func(r *hacv1.ExecRequest) error {
		if b := r.GetBlob(); b != nil {
			cur.Write(b.Data)
			if b.Last {
				blobs = append(blobs, sent{b.Sha256, b.ChangedTo, b.ChangedPath, bytes.Clone(cur.Bytes())})
				cur.Reset()
			}
		}
		return nil
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	byContent := map[string]sent{}
	for _, b := range blobs {
		byContent[string(b.data)] = b
		if got := sumOf(b.data); b.changedTo == "" && got != b.sum || b.changedTo != "" && got != b.changedTo {
			t.Errorf("blob %+v: its data hashes to %s", b, got)
		}
	}
	if b := byContent["epoch 1\n"]; b.sum != sumOf([]byte("epoch 1\n")) || b.changedTo != "" {
		t.Errorf("the growing log went as %+v, want as listed", b)
	}
	old := sumOf([]byte("lr=1\n"))
	if b := byContent["lr=2\n"]; b.sum != old || b.path != "a.cfg" || b.changedTo != sumOf([]byte("lr=2\n")) {
		t.Errorf("the rewritten file went as %+v", b)
	}
	if b := byContent["lr=1\n"]; b.sum != old || b.changedTo != "" {
		t.Errorf("the content a.cfg had was not sent from b.cfg: %+v", b)
	}
	if len(u.Changed) != 1 || filepath.Base(u.Changed[0]) != "a.cfg" {
		t.Errorf("Changed = %v, want a.cfg only", u.Changed)
	}
}

// TestUploadChangeNamesItsManifest: a change in transit names the entry
// it is for, the workspace's or the server layer's, also where both hold
// the same path.
func TestUploadChangeNamesItsManifest(t *testing.T) {
	work, root := t.TempDir(), t.TempDir()
	for _, d := range []string{work, root} {
		os.WriteFile(filepath.Join(d, "train.py"), []byte("print(1)\n"), 0o644)
	}
	wm, err := workspace.Walk(work, nil)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := workspace.Walk(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "train.py"), []byte("print(2)\n"), 0o644)
	os.WriteFile(filepath.Join(root, "train.py"), []byte("print(3)\n"), 0o644)
	u, err := PlanUpload([]BlobSource{{Root: work, Manifest: wm}, {Root: root, Manifest: lm, Layer: true}}, []string{sumOf([]byte("print(1)\n"))})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	u.Send(func(r *hacv1.ExecRequest) error {
		if b := r.GetBlob(); b.GetLast() {
			got = append(got, fmt.Sprintf("%s layer=%v %s", b.ChangedPath, b.ChangedInLayer, b.Data))
		}
		return nil
	}, io.Discard)
	if want := []string{"train.py layer=false print(2)\n", "train.py layer=true print(3)\n"}; !slices.Equal(got, want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
}
