package agent

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// TestStdinQueueDoesNotBlock: input for a program that does not read is
// queued, up to its bound, without blocking the writer; closing writes
// what was queued and then ends the input.
func TestStdinQueueDoesNotBlock(t *testing.T) {
	r, w := io.Pipe()
	q := newStdinQueue(w, 1<<20)
	done := make(chan struct{})
	go func() {
		for range 100 {
			q.write(t.Context(), make([]byte, 4096)) // 400 KiB, no reader yet
		}
		q.close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writes blocked on a program that does not read")
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil || n != 100*4096 {
		t.Fatalf("read %d, %v; want all of it, then EOF", n, err)
	}
}

// TestStdinQueueBounded: a message is at most 1 MiB, the queue holds at
// most its bound (a write that would pass it waits), and a waiting write returns when
// its stream ends, so that an attacher who leaves leaves nothing behind.
func TestStdinQueueBounded(t *testing.T) {
	r, w := io.Pipe()
	defer r.Close()
	q := newStdinQueue(w, 8<<20)
	defer q.close()
	if err := q.write(t.Context(), make([]byte, 2<<20)); !errors.Is(err, errInputTooLarge) {
		t.Fatalf("a 2 MiB message: %v", err)
	}
	for range 8 {
		q.write(t.Context(), make([]byte, 1<<20)) // the program reads nothing
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		q.write(ctx, make([]byte, 1<<20))
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("a write past the bound was queued")
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting write outlived its stream")
	}
	q.mu.Lock()
	size := q.size
	q.mu.Unlock()
	if size > 8<<20 {
		t.Fatalf("the queue holds %d bytes past its bound", size)
	}
}
