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
}

// Upload is the content a node asked for, file by file.
type Upload struct {
	want  []string
	files map[string]blobFile
	// Total is the bytes to send.
	Total int64
}

type blobFile struct {
	path string
	size int64
}

// PlanUpload finds the files behind the hashes a node asked for.
func PlanUpload(sources []BlobSource, want []string) (*Upload, error) {
	u := &Upload{want: want, files: map[string]blobFile{}}
	byHash := map[string]blobFile{}
	for _, s := range sources {
		for _, f := range s.Manifest.Files {
			if f.Sha256 != "" {
				byHash[f.Sha256] = blobFile{filepath.Join(s.Root, filepath.FromSlash(f.Path)), f.Size}
			}
		}
	}
	for _, sum := range want {
		f, ok := byHash[sum]
		if !ok {
			return nil, fmt.Errorf("the node asked for unknown content %s", sum)
		}
		u.files[sum] = f
		u.Total += f.size
	}
	return u, nil
}

// Files is how many files the upload sends.
func (u *Upload) Files() int { return len(u.want) }

const blobChunk = 256 << 10

// Send sends the blobs, then blobs_done; progress sees each chunk sent.
func (u *Upload) Send(send func(*hacv1.ExecRequest) error, progress io.Writer) error {
	buf := make([]byte, blobChunk)
	for _, sum := range u.want {
		f := u.files[sum]
		if sum == workspace.EmptySum {
			// Nothing to read (an unreadable file of the server's layer
			// travels as empty).
			if err := send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Blob{Blob: &hacv1.Blob{Sha256: sum, Last: true}}}); err != nil {
				return err
			}
			continue
		}
		if err := sendBlob(f.path, sum, f.size, buf, send, progress); err != nil {
			return err
		}
	}
	return send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_BlobsDone{BlobsDone: true}})
}

// sendBlob sends one file's content, checking on the way that it is still
// what the manifest says: a file that grows, shrinks or changes while it
// is uploaded is an error that names it, and its last chunk is never sent
// (the node drops what it got).
func sendBlob(path, sum string, size int64, buf []byte, send func(*hacv1.ExecRequest) error, progress io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	defer f.Close()
	changed := fmt.Errorf("%s changed while it was uploaded: run the program again once it is written (or list it in .hacignore)", path)
	h := sha256.New()
	in := io.LimitReader(f, size+1)
	var sent int64
	for {
		n, err := io.ReadFull(in, buf)
		last := err != nil
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("upload %s: %w", path, err)
		}
		h.Write(buf[:n])
		if sent += int64(n); sent > size || last && (sent != size || hex.EncodeToString(h.Sum(nil)) != sum) {
			return changed
		}
		progress.Write(buf[:n])
		if err := send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Blob{Blob: &hacv1.Blob{Sha256: sum, Data: buf[:n], Last: last}}}); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}
