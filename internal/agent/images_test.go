package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/image"
)

// imageServer serves GetImage from one tree, or fails as told.
type imageServer struct {
	hacv1connect.UnimplementedAgentServiceHandler
	root, digest string
	err          error
}

func (s imageServer) GetImage(ctx context.Context, req *connect.Request[hacv1.GetImageRequest], stream *connect.ServerStream[hacv1.GetImageResponse]) error {
	if s.err != nil {
		return s.err
	}
	if req.Msg.Digest != s.digest {
		return connect.NewError(connect.CodeNotFound, errors.New("no image has digest "+req.Msg.Digest+" here"))
	}
	return image.Write(s.root, sendWriter(func(b []byte) error {
		return stream.Send(&hacv1.GetImageResponse{Data: append([]byte(nil), b...)})
	}))
}

type sendWriter func([]byte) error

func (f sendWriter) Write(p []byte) (int, error) { return len(p), f(p) }

func imageFixture(t *testing.T, srv imageServer) *images {
	path, h := hacv1connect.NewAgentServiceHandler(srv)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	im, err := newImages(t.TempDir(), hacv1connect.NewAgentServiceClient(ts.Client(), ts.URL), func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// TestImageFetch: a node fetches an image once and keeps it; a digest the
// control plane does not have, or a stream that is not the digest's, is an
// error that says so and leaves nothing behind.
func TestImageFetch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("an image keeps its owners: needs root")
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "os-release"), []byte("bookworm\n"), 0o644)
	digest, err := image.Digest(src)
	if err != nil {
		t.Fatal(err)
	}
	im := imageFixture(t, imageServer{root: src, digest: digest})
	root, err := im.root(t.Context(), digest)
	if err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(filepath.Join(root, "os-release")); string(raw) != "bookworm\n" {
		t.Fatalf("the image's file: %q", raw)
	}
	os.WriteFile(filepath.Join(src, "os-release"), []byte("changed\n"), 0o644)
	if again, err := im.root(t.Context(), digest); err != nil || again != root {
		t.Fatalf("a kept image: %v %v", again, err)
	}
	other := "sha256:" + strings.Repeat("b", 64)
	if _, err := im.root(t.Context(), other); err == nil || !strings.Contains(err.Error(), "could not fetch image "+other) || !strings.Contains(err.Error(), "no image has digest") {
		t.Errorf("an unknown digest: %v", err)
	}
	// The tree changed under its digest: the stream is refused.
	im2 := imageFixture(t, imageServer{root: src, digest: digest})
	if _, err := im2.root(t.Context(), digest); err == nil || !strings.Contains(err.Error(), "digest is") {
		t.Errorf("a stream that is not the digest's: %v", err)
	}
	for _, im := range []*images{im, im2} {
		entries, _ := os.ReadDir(im.dir)
		if len(entries) > 1 {
			t.Errorf("%s holds %d entries, want the one good image at most", im.dir, len(entries))
		}
	}
	if _, err := im.root(t.Context(), "sha256:nope"); err == nil {
		t.Error("a malformed digest was fetched")
	}
}
