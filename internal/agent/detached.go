package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/workspace"
)

// The worker API of detached jobs: Output (hac logs), Attach (hac attach)
// and Fetch (hac fetch), each with a ticket of OpenJob for that access.

// opened returns the detached job a ticket of OpenJob names, if the
// ticket is for access.
func (w *worker) opened(ctx context.Context, bodyTicket, access string, header string) (*keptJob, error) {
	c, ok := ctx.Value(claimsKey{}).(ticket.Claims)
	if !ok || bodyTicket != header || c.Access != access {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("this ticket is not for the job's %s: ask again (hac logs, hac attach, hac fetch do)", access))
	}
	k := w.a.keptJob(c.JobID)
	if k == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("node %s no longer has job %d's output and files: a node keeps them for %v after the job ends (hac agent --job-retention)",
			w.a.cfg.Name, c.JobID, w.a.cfg.JobRetention))
	}
	return k, nil
}

func (w *worker) Output(ctx context.Context, req *connect.Request[hacv1.OutputRequest], stream *connect.ServerStream[hacv1.OutputResponse]) error {
	k, err := w.opened(ctx, req.Msg.Ticket, ticket.AccessOutput, req.Header().Get(TicketHeader))
	if err != nil {
		return err
	}
	return k.streamOutput(ctx, req.Msg.Follow, stream.Send)
}

func (w *worker) Attach(ctx context.Context, stream *connect.BidiStream[hacv1.AttachRequest, hacv1.OutputResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("protocol error: the first message must open the stream"))
	}
	k, err := w.opened(ctx, open.Ticket, ticket.AccessAttach, stream.RequestHeader().Get(TicketHeader))
	if err != nil {
		return err
	}
	go func() {
		for {
			msg, err := stream.Receive()
			if err != nil {
				return // the client went: the job runs on
			}
			if run, _, _ := k.state(); run != nil {
				if sig := syscall.Signal(msg.GetSignal()); sig != syscall.SIGTSTP && sig != syscall.SIGCONT {
					run.signal(sig)
				}
			}
		}
	}()
	return k.streamOutput(ctx, true, stream.Send)
}

// streamOutput sends the output kept from its oldest part on and, with
// follow, what comes until the program ends; the end (Exited) closes a
// stream that reached it.
func (k *keptJob) streamOutput(ctx context.Context, follow bool, send func(*hacv1.OutputResponse) error) error {
	r := k.log.reader()
	defer r.close()
	if _, _, dropped, _, _ := k.log.state(); dropped > 0 {
		if err := send(&hacv1.OutputResponse{Msg: &hacv1.OutputResponse_Dropped{Dropped: dropped}}); err != nil {
			return err
		}
	}
	for {
		stream, data, wait, err := r.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if wait != nil {
			if !follow {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-wait:
			}
			continue
		}
		msg := &hacv1.OutputResponse{Msg: &hacv1.OutputResponse_Stdout{Stdout: data}}
		if stream == streamStderr {
			msg.Msg = &hacv1.OutputResponse_Stderr{Stderr: data}
		}
		if err := send(msg); err != nil {
			return err
		}
	}
	if _, _, end := k.state(); end != nil {
		return send(&hacv1.OutputResponse{Msg: &hacv1.OutputResponse_Exited{Exited: end.exited()}})
	}
	return nil
}

func (w *worker) Fetch(ctx context.Context, req *connect.Request[hacv1.FetchRequest], stream *connect.ServerStream[hacv1.FetchResponse]) error {
	k, err := w.opened(ctx, req.Msg.Ticket, ticket.AccessFetch, req.Header().Get(TicketHeader))
	if err != nil {
		return err
	}
	_, dir, _ := k.state()
	if _, err := os.Lstat(dir); err != nil {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("job %d's files are gone from node %s (its agent stopped while the job ran)", k.id, w.a.cfg.Name))
	}
	m, err := k.uploaded()
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("job %d's record on node %s is damaged: %v", k.id, w.a.cfg.Name, err))
	}
	changes, err := workspace.Changes(m, dir)
	if err != nil {
		w.a.log.Warn("list a detached job's changed files", "job", k.id, "err", err)
	}
	send := func(c *hacv1.ChangedFile) error {
		return stream.Send(&hacv1.FetchResponse{Msg: &hacv1.FetchResponse_Changed{Changed: c}})
	}
	for _, c := range changes {
		if err := sendFile(send, dir, c); err != nil {
			return err
		}
	}
	return stream.Send(&hacv1.FetchResponse{Msg: &hacv1.FetchResponse_Done{Done: true}})
}
