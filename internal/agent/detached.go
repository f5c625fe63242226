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

// The worker API of started jobs: Output (hac logs), Attach (hac attach)
// and, for detached ones, Fetch (hac fetch), each with a ticket of
// OpenJob for that access.

// opened returns the detached job a ticket of OpenJob names, if the
// ticket (in the header, checked, and in the body) is for access.
func (w *worker) opened(ctx context.Context, access, header, body string) (*keptJob, error) {
	c, ok := ctx.Value(claimsKey{}).(ticket.Claims)
	if !ok || body != header || c.Access != access {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("this ticket is not for the job's %s: ask again (hac logs, hac attach, hac fetch do)", access))
	}
	k := w.a.keptJob(c.JobID)
	if k != nil && k.output() == nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("job %d is still being prepared on node %s: try again in a moment", c.JobID, w.a.cfg.Name))
	}
	if k == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("node %s has no output or files of job %d: a node keeps them from the job's start until %v after its end, or less when newer jobs need the room",
			w.a.cfg.Name, c.JobID, w.a.cfg.JobRetention))
	}
	return k, nil
}

// tooManyStreams refuses a stream past maxJobStreams.
func tooManyStreams(k *keptJob) error {
	return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("job %d has %d readers already (hac logs -f, hac attach): stop one", k.id, maxJobStreams))
}

func (w *worker) Output(ctx context.Context, req *connect.Request[hacv1.OutputRequest], stream *connect.ServerStream[hacv1.OutputResponse]) error {
	k, err := w.opened(ctx, ticket.AccessOutput, req.Header().Get(TicketHeader), req.Msg.Ticket)
	if err != nil {
		return err
	}
	if !k.openStream() {
		return tooManyStreams(k)
	}
	defer k.closeStream()
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
	k, err := w.opened(ctx, ticket.AccessAttach, stream.RequestHeader().Get(TicketHeader), open.Ticket)
	if err != nil {
		return err
	}
	if !k.openStream() {
		return tooManyStreams(k)
	}
	defer k.closeStream()
	if err := stream.Send(&hacv1.OutputResponse{Msg: &hacv1.OutputResponse_StdinOpen{StdinOpen: k.keepsStdin()}}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		for {
			msg, err := stream.Receive()
			if err != nil {
				return // the client went: the job runs on
			}
			switch m := msg.Msg.(type) {
			case *hacv1.AttachRequest_Signal:
				if run, _ := k.state(); run != nil {
					run.signal(syscall.Signal(m.Signal))
				}
			case *hacv1.AttachRequest_Stdin:
				// Waits while the program reads slower than input comes
				// (signals too, behind it), until the stream ends.
				if in := k.input(ctx); in != nil {
					if err := in.write(ctx, m.Stdin); err != nil {
						cancel(connect.NewError(connect.CodeInvalidArgument, err))
						return
					}
				}
			case *hacv1.AttachRequest_CloseStdin:
				if k.input(ctx) != nil {
					k.closeStdin()
				}
			}
		}
	}()
	err = k.streamOutput(ctx, true, stream.Send)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// outputBatch bounds the output one message carries.
const outputBatch = 256 << 10

// streamOutput sends the output kept from its oldest part on and, with
// follow, what comes until the program ends; the end (Exited) closes a
// stream that reached it. Records of one stream go out together, up to
// outputBatch a message, and the reader's file is closed while a message
// is on its way: a client that stops reading holds no file (a rotated one
// would stay on disk). Output a slow stream missed (the log dropped it
// before the stream came to it) is said (Skipped) where it was.
func (k *keptJob) streamOutput(ctx context.Context, follow bool, send func(*hacv1.OutputResponse) error) error {
	r := k.output().reader()
	defer r.close()
	if dropped := r.gone(); dropped > 0 {
		if err := send(&hacv1.OutputResponse{Msg: &hacv1.OutputResponse_Dropped{Dropped: dropped}}); err != nil {
			return err
		}
	}
	var batch []byte
	var batchStream byte
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		r.pause()
		msg := &hacv1.OutputResponse{Msg: &hacv1.OutputResponse_Stdout{Stdout: batch}}
		if batchStream == streamStderr {
			msg.Msg = &hacv1.OutputResponse_Stderr{Stderr: batch}
		}
		batch = nil
		return send(msg)
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
			if err := flush(); err != nil {
				return err
			}
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
		if skipped := r.skipped(); skipped > 0 {
			// Said where it happened: between what came and what comes.
			if err := flush(); err != nil {
				return err
			}
			if err := send(&hacv1.OutputResponse{Msg: &hacv1.OutputResponse_Skipped{Skipped: skipped}}); err != nil {
				return err
			}
		}
		if stream != batchStream || len(batch)+len(data) > outputBatch {
			if err := flush(); err != nil {
				return err
			}
		}
		batchStream, batch = stream, append(batch, data...)
	}
	if err := flush(); err != nil {
		return err
	}
	if _, end := k.state(); end != nil {
		return send(&hacv1.OutputResponse{Msg: &hacv1.OutputResponse_Exited{Exited: end.exited()}})
	}
	return nil
}

func (w *worker) Fetch(ctx context.Context, req *connect.Request[hacv1.FetchRequest], stream *connect.ServerStream[hacv1.FetchResponse]) error {
	k, err := w.opened(ctx, ticket.AccessFetch, req.Header().Get(TicketHeader), req.Msg.Ticket)
	if err != nil {
		return err
	}
	if k.work == "" {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("job %d ran attached: its files went back to its hac run", k.id))
	}
	if _, err := os.Lstat(k.work); err != nil {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("job %d's files are gone from node %s", k.id, w.a.cfg.Name))
	}
	m, err := k.uploaded()
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("job %d's record on node %s is damaged: %v", k.id, w.a.cfg.Name, err))
	}
	changes, err := workspace.Changes(m, k.work)
	if err != nil {
		w.a.log.Warn("list a detached job's changed files", "job", k.id, "err", err)
		return connect.NewError(connect.CodeInternal, fmt.Errorf("node %s could not list job %d's files: %v", w.a.cfg.Name, k.id, err))
	}
	send := func(c *hacv1.ChangedFile) error {
		return stream.Send(&hacv1.FetchResponse{Msg: &hacv1.FetchResponse_Changed{Changed: c}})
	}
	for _, c := range changes {
		if err := workspace.SendChanged(send, k.work, c); errors.Is(err, workspace.ErrUnreadable) {
			w.a.log.Warn("send a detached job's file", "job", k.id, "path", c.Path, "err", err)
		} else if err != nil {
			return err
		}
	}
	return stream.Send(&hacv1.FetchResponse{Msg: &hacv1.FetchResponse_Done{Done: true}})
}
