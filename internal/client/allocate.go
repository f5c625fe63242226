package client

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// Allocation is what a run asks of the pool.
type Allocation struct {
	Argv []string
	// ClientPID is shown beside the command (hac smi, the busy warning).
	ClientPID int64
	// Priority is the run's queue priority; nil: the user's.
	Priority *int
	// Detach: the job runs without its client (hac run -d).
	Detach bool
}

// ErrNoGrant means the control plane ended the request without a grant.
var ErrNoGrant = errors.New("the control plane ended the request without a grant: try again")

// Allocate asks for resources for one run and waits for the grant,
// telling waiting of every change in where the run waits (nil: nothing to
// tell). Ending ctx withdraws the request.
func (c *Conn) Allocate(ctx context.Context, a Allocation, waiting func(*hacv1.Waiting)) (*hacv1.Grant, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &hacv1.AllocateRequest{Server: c.Server, Command: a.Argv, ClientPid: a.ClientPID, Detach: a.Detach}
	if a.Priority != nil {
		req.Priority, req.HasPriority = int32(*a.Priority), true
	}
	stream, err := c.Accel.Allocate(actx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	for stream.Receive() {
		switch ev := stream.Msg().Event.(type) {
		case *hacv1.AllocateResponse_Grant:
			return ev.Grant, nil
		case *hacv1.AllocateResponse_Waiting:
			if waiting != nil {
				waiting(ev.Waiting)
			}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return nil, ErrNoGrant
}
