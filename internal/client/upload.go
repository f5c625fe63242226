package client

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

// BlobSource is a folder whose files a manifest lists.
type BlobSource struct {
	Root     string
	Manifest *hacv1.Manifest
	// Layer: the manifest is the server's layer (Start.environment.layer),
	// not the workspace.
	Layer bool
}

// Upload is the content a node asked for, file by file.
type Upload struct {
	want  []string
	files map[string][]blobFile // the files that hold each hash
	// Total is the bytes to send.
	Total int64
	// Changed names the files that changed while they were sent: the
	// program sees them as they were read.
	Changed []string
}

type blobFile struct {
	path  string // on this machine
	rel   string // as the manifest names it
	layer bool   // the manifest is the server's layer
	size  int64
}

// PlanUpload finds the files behind the hashes a node asked for.
func PlanUpload(sources []BlobSource, want []string) (*Upload, error) {
	u := &Upload{want: want, files: map[string][]blobFile{}}
	byHash := map[string][]blobFile{}
	for _, s := range sources {
		for _, f := range s.Manifest.Files {
			if f.Sha256 != "" {
				byHash[f.Sha256] = append(byHash[f.Sha256], blobFile{filepath.Join(s.Root, filepath.FromSlash(f.Path)), f.Path, s.Layer, f.Size})
			}
		}
	}
	for _, sum := range want {
		files, ok := byHash[sum]
		if !ok {
			return nil, fmt.Errorf("the node asked for unknown content %s", sum)
		}
		u.files[sum] = files
		u.Total += files[0].size
	}
	return u, nil
}

// Files is how many files the upload sends.
func (u *Upload) Files() int { return len(u.want) }

const blobChunk = 256 << 10

// Send sends the blobs, then blobs_done; progress sees each chunk sent.
// A file that changed since it was listed does not fail the run: what
// grew at its end stays behind (the program sees the file as it was
// listed: a log being appended to), and a file changed otherwise goes as
// it is read, under its new hash (Changed names it); the content it had
// is then sent from another file that held it, if any.
func (u *Upload) Send(send func(*hacv1.ExecRequest) error, progress io.Writer) error {
	buf := make([]byte, blobChunk)
	for _, sum := range u.want {
		if sum == workspace.EmptySum {
			// Nothing to read (an unreadable file of the server's layer
			// travels as empty).
			if err := send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Blob{Blob: &hacv1.Blob{Sha256: sum, Last: true}}}); err != nil {
				return err
			}
			continue
		}
		for _, f := range u.files[sum] {
			same, err := sendBlob(f, sum, buf, send, progress)
			if err != nil {
				return err
			}
			if same {
				break
			}
			u.Changed = append(u.Changed, f.path)
		}
	}
	return send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_BlobsDone{BlobsDone: true}})
}

// sendBlob sends one file's content as blob sum, its declared size at
// most, and reports whether it was that content; if not, its last chunk
// names what was sent instead (Blob.changed_to).
func sendBlob(f blobFile, sum string, buf []byte, send func(*hacv1.ExecRequest) error, progress io.Writer) (same bool, err error) {
	file, err := os.Open(f.path)
	if err != nil {
		return false, fmt.Errorf("upload %s: %w (it was there when the folder was read: run the program again)", f.path, err)
	}
	defer file.Close()
	h := sha256.New()
	in := io.LimitReader(file, f.size)
	var sent int64
	for {
		n, err := io.ReadFull(in, buf)
		last := err != nil
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return false, fmt.Errorf("upload %s: %w", f.path, err)
		}
		h.Write(buf[:n])
		progress.Write(buf[:n])
		sent += int64(n)
		b := &hacv1.Blob{Sha256: sum, Data: buf[:n], Last: last}
		if last {
			// Shorter than listed (it shrank), or other bytes: as read.
			if got := hex.EncodeToString(h.Sum(nil)); got != sum || sent != f.size {
				b.ChangedTo, b.ChangedPath, b.ChangedInLayer = got, f.rel, f.layer
			}
		}
		if err := send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Blob{Blob: b}}); err != nil {
			return false, err
		}
		if last {
			return b.ChangedTo == "", nil
		}
	}
}
