package agent

import (
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
			q.write(make([]byte, 4096)) // 400 KiB, no reader yet
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
