package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/image"
)

// images are the server images this node holds, by digest, each unpacked
// once from the control plane (GetImage) when a job first needs it:
// DIR/HEX/rootfs, beside DIR/HEX/complete once it is whole.
type images struct {
	dir    string
	client hacv1connect.AgentServiceClient
	log    func(msg string, args ...any)

	mu       sync.Mutex
	fetching map[string]*imageFetch
	failed   map[string]time.Time // prefetches wait a while after a failure
	lastErr  map[string]error     // and jobs a little
}

// jobFetchRetry is how long jobs are told of a failed fetch before it is
// tried again.
const jobFetchRetry = 10 * time.Second

// prefetchRetry is how long a failed prefetch waits to be tried again.
const prefetchRetry = time.Minute

type imageFetch struct {
	done chan struct{}
	err  error
}

// imageFetchTimeout bounds one image's transfer.
const imageFetchTimeout = 30 * time.Minute

func newImages(dir string, client hacv1connect.AgentServiceClient, log func(string, ...any)) (*images, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Transfers an earlier agent left half done start again.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "complete")); err != nil || strings.HasPrefix(e.Name(), "fetch-") {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return &images{dir: dir, client: client, log: log, fetching: map[string]*imageFetch{}, failed: map[string]time.Time{}, lastErr: map[string]error{}}, nil
}

// prefetch starts fetching an image the node lacks, for the jobs to come
// (the control plane names the images in use); one that failed is tried
// again at the next call.
func (im *images) prefetch(digest string) {
	if !image.ValidDigest(digest) || im.has(digest) {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if len(im.fetching) == 0 && time.Since(im.failed[digest]) > prefetchRetry {
		im.startLocked(digest) // one at a time: a job's own fetch goes beside it
	}
}

func (im *images) has(digest string) bool {
	_, err := os.Stat(filepath.Join(im.dirOf(digest), "complete"))
	return err == nil
}

func (im *images) dirOf(digest string) string {
	return filepath.Join(im.dir, strings.TrimPrefix(digest, image.DigestPrefix))
}

// startLocked starts a fetch unless one is under way or the image came
// meanwhile, and returns it.
func (im *images) startLocked(digest string) *imageFetch {
	f := im.fetching[digest]
	if f == nil && im.has(digest) {
		f = &imageFetch{done: make(chan struct{})}
		close(f.done)
		return f
	}
	if f == nil {
		f = &imageFetch{done: make(chan struct{})}
		im.fetching[digest] = f
		go func() {
			f.err = im.fetch(digest, im.dirOf(digest))
			if f.err != nil {
				im.log("image fetch failed", "digest", digest, "err", f.err)
			}
			im.mu.Lock()
			delete(im.fetching, digest)
			if f.err != nil {
				im.failed[digest], im.lastErr[digest] = time.Now(), f.err
			} else {
				delete(im.failed, digest)
				delete(im.lastErr, digest)
			}
			im.mu.Unlock()
			close(f.done)
		}()
	}
	return f
}

// root returns the root of the image with this digest, fetching it first
// if the node lacks it. A fetch goes on for the next job when ctx ends.
func (im *images) root(ctx context.Context, digest string) (string, error) {
	if !image.ValidDigest(digest) {
		return "", fmt.Errorf("the ticket names no valid image (%q)", digest)
	}
	root := filepath.Join(im.dirOf(digest), "rootfs")
	if im.has(digest) {
		return root, nil
	}
	im.mu.Lock()
	if err, at := im.lastErr[digest], im.failed[digest]; im.fetching[digest] == nil && err != nil && time.Since(at) < jobFetchRetry {
		im.mu.Unlock()
		return "", err // a failed fetch is not tried again for every job at once
	}
	f := im.startLocked(digest)
	im.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if f.err != nil {
		return "", f.err
	}
	return root, nil
}

func (im *images) fetch(digest, dir string) error {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), imageFetchTimeout)
	defer cancel()
	// Built aside and renamed into place whole: a complete image is never
	// removed (jobs mount it).
	tmp, err := os.MkdirTemp(im.dir, "fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	stream, err := im.client.GetImage(ctx, connect.NewRequest(&hacv1.GetImageRequest{Digest: digest}))
	if err != nil {
		return fmt.Errorf("the node could not fetch image %s from the control plane: %w", digest, err)
	}
	defer stream.Close()
	pr, pw := io.Pipe()
	go func() {
		var err error
		for stream.Receive() {
			if _, err = pw.Write(stream.Msg().Data); err != nil {
				break
			}
		}
		if err == nil {
			err = stream.Err()
		}
		pw.CloseWithError(err)
	}()
	err = image.Unpack(pr, digest, filepath.Join(tmp, "rootfs"))
	pr.CloseWithError(errors.New("unpack ended"))
	if err != nil {
		if ce := new(connect.Error); errors.As(err, &ce) {
			return fmt.Errorf("the node could not fetch image %s from the control plane: %s", digest, ce.Message())
		}
		return fmt.Errorf("the node could not unpack image %s: %w", digest, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o600); err != nil {
		return err
	}
	os.RemoveAll(dir) // an incomplete one: has() is false, or no fetch would run
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	im.log("image ready", "digest", digest, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

func timeNs(ns int64) time.Time { return time.Unix(0, ns) }
