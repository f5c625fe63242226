package client

import (
	"context"
	"sync"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// Lease keeps a granted job's lease alive while its client runs it.
// Renewals are made one at a time, so that a periodic one already on its
// way cannot land after (and undo) the suspended lease that Ctrl+Z asks
// for.
type Lease struct {
	conn  *Conn
	jobID string
	mu    sync.Mutex
	// suspended: renewals ask for the suspended lease (Ctrl+Z).
	suspended bool
	ttl       time.Duration // the last renewal's
}

// NewLease returns the lease of a granted job.
func NewLease(c *Conn, jobID string) *Lease { return &Lease{conn: c, jobID: jobID} }

// Renew renews once, as Suspend last said.
func (l *Lease) Renew(ctx context.Context, timeout time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewLocked(ctx, timeout)
}

func (l *Lease) renewLocked(ctx context.Context, timeout time.Duration) error {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := l.conn.Accel.RenewLease(rctx, connect.NewRequest(&hacv1.RenewLeaseRequest{JobId: l.jobID, Suspended: l.suspended}))
	if err == nil {
		l.ttl = time.Duration(resp.Msg.LeaseTtlSeconds) * time.Second
	}
	return err
}

// Suspend switches to (or back from) the suspended lease, and renews.
func (l *Lease) Suspend(ctx context.Context, on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.suspended = on
	err := l.renewLocked(ctx, 5*time.Second)
	if err != nil && on {
		l.suspended = false
	}
	return err
}

// SuspendedFor is how long the last suspended lease lasts.
func (l *Lease) SuspendedFor() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ttl
}

// Keep renews every third of ttl until ctx ends.
func (l *Lease) Keep(ctx context.Context, ttl time.Duration) {
	every := max(ttl/3, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.Renew(ctx, every)
		}
	}
}

// Release ends a job and frees what it holds: with the program's exit code
// when it has one. It waits at most 5 s, even after ctx ended.
func (c *Conn) Release(ctx context.Context, jobID string, code *int32) error {
	req := &hacv1.ReleaseRequest{JobId: jobID}
	if code != nil {
		req.ExitCode, req.HasExitCode = *code, true
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := c.Accel.Release(rctx, connect.NewRequest(req))
	return err
}
