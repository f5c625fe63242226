package controlplane

import (
	"strings"
	"testing"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/store"
)

// TestGetImageRefusals: only a node fetches images, by a well-formed
// digest, from a control plane that has images.
func TestGetImageRefusals(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 1, 1)
	ctx := t.Context()
	cred, err := s.EnrollNode(ctx, "gpu9", "")
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(tok, digest string) error {
		c := hacv1connect.NewAgentServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(tok)))
		stream, err := c.GetImage(ctx, connect.NewRequest(&hacv1.GetImageRequest{Digest: digest}))
		if err != nil {
			return err
		}
		for stream.Receive() {
		}
		return stream.Err()
	}
	good := "sha256:" + strings.Repeat("a", 64)
	for name, tc := range map[string]struct {
		tok, digest string
		code        connect.Code
	}{
		"a server token": {toks[0], good, connect.CodePermissionDenied},
		"a bad digest":   {cred, "sha256:xyz", connect.CodeInvalidArgument},
		"no images here": {cred, good, connect.CodeNotFound},
	} {
		if err := fetch(tc.tok, tc.digest); connect.CodeOf(err) != tc.code {
			t.Errorf("%s: %v, want %v", name, err, tc.code)
		}
	}
}
