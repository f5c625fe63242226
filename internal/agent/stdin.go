package agent

import (
	"context"
	"errors"
	"io"
	"sync"
)

// stdinQueue writes a job's input on a goroutine of its own, so that the
// stream's receive loop, which also carries signals (Ctrl+C, Ctrl+Z, fg),
// never waits on a program that does not read (a frozen one, a slow
// one): up to max bytes wait in memory, more than a client can have in
// flight on the stream; past that, the receive loop waits after all.
type stdinQueue struct {
	w    io.WriteCloser
	max  int
	mu   sync.Mutex
	cond *sync.Cond
	// queue holds what the program has not read yet, size bytes of it.
	queue [][]byte
	size  int
	eof   bool // no more input: close w once the queue is written
	dead  bool // w failed: what comes is dropped
}

// stdinBacklog bounds a stdinQueue: more than the HTTP/2 stream window a
// client may fill (Go's transport: 4 MiB).
const stdinBacklog = 8 << 20

// maxStdinMessage bounds one message of input (clients send 32 KiB): the
// backlog's bound is what the queue holds, a message past it would pass.
const maxStdinMessage = 1 << 20

func newStdinQueue(w io.WriteCloser, max int) *stdinQueue {
	q := &stdinQueue{w: w, max: max}
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

// errInputTooLarge refuses a message of input past maxStdinMessage.
var errInputTooLarge = errors.New("a message of input past 1 MiB")

// write queues p for the program, waiting while the queue is full, until
// ctx ends. A message past maxStdinMessage is refused.
func (q *stdinQueue) write(ctx context.Context, p []byte) error {
	if len(p) > maxStdinMessage {
		return errInputTooLarge
	}
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.size > 0 && q.size+len(p) > q.max && !q.dead && !q.eof && ctx.Err() == nil {
		q.cond.Wait()
	}
	if q.dead || q.eof || ctx.Err() != nil {
		return nil
	}
	q.queue = append(q.queue, p)
	q.size += len(p)
	q.cond.Broadcast()
	return nil
}

// close ends the input once what is queued is written.
func (q *stdinQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.eof = true
	q.cond.Broadcast()
}

func (q *stdinQueue) run() {
	for {
		q.mu.Lock()
		for len(q.queue) == 0 && !q.eof {
			q.cond.Wait()
		}
		if len(q.queue) == 0 || q.dead {
			q.mu.Unlock()
			q.w.Close()
			return
		}
		p := q.queue[0]
		q.queue = q.queue[1:]
		q.mu.Unlock()
		_, err := q.w.Write(p)
		q.mu.Lock()
		q.size -= len(p)
		if err != nil {
			q.dead, q.queue, q.size = true, nil, 0
		}
		q.cond.Broadcast()
		q.mu.Unlock()
	}
}
