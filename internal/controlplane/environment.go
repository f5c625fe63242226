package controlplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/image"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/vm"
)

// environment is what a job's tickets say its root is made of (SPEC A7): a
// server made by hac runs its jobs on its own image, by digest, under the
// changes its client ships; any other runs them on the node's runtime.
func (s *Server) environment(j jobState) (ticket.Environment, error) {
	if j.image == "" || s.cfg.Servers == nil {
		return ticket.Environment{}, nil
	}
	digest, err := s.cfg.Servers.ImageDigest(j.image)
	if err != nil {
		return ticket.Environment{}, fmt.Errorf("the image %s of server %s: %w", j.image, j.serverName, err)
	}
	return ticket.Environment{Server: j.ServerID, Image: digest, HostUsr: s.cfg.Servers.ImageSharesHostUsr(j.image)}, nil
}

// imageChunk is the size of GetImage's messages.
const imageChunk = 256 << 10

// GetImage streams an image to a node that runs (or is about to run) its
// servers' jobs. Images hold no tenant's data, so any node may fetch any.
func (a agentService) GetImage(ctx context.Context, req *connect.Request[hacv1.GetImageRequest], stream *connect.ServerStream[hacv1.GetImageResponse]) error {
	if principalFrom(ctx).kind != store.NodeToken {
		return apiError(fmt.Errorf("%w: only nodes fetch images (hac agent --join)", ErrPermission))
	}
	digest := req.Msg.Digest
	if !image.ValidDigest(digest) {
		return apiError(fmt.Errorf("%w: %q is not an image digest (want %s and 64 hex digits)", ErrInvalid, digest, image.DigestPrefix))
	}
	if a.s.cfg.Servers == nil {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("this control plane runs no servers, so it has no image %s", digest))
	}
	w := bufio.NewWriterSize(sendWriter(func(b []byte) error {
		return stream.Send(&hacv1.GetImageResponse{Data: b})
	}), imageChunk)
	err := a.s.cfg.Servers.WriteImage(digest, w)
	if err == nil {
		err = w.Flush()
	}
	if errors.Is(err, vm.ErrNotFound) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("no image has digest %s here (it was built again since: run the program again)", digest))
	}
	return err
}

// sendWriter sends each Write as one message (bufio sizes them).
type sendWriter func([]byte) error

func (f sendWriter) Write(p []byte) (int, error) {
	if err := f(p); err != nil {
		return 0, err
	}
	return len(p), nil
}
