package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/workspace"
)

// Output is where a detached job's output goes.
type Output struct {
	Stdout, Stderr io.Writer
	// Dropped hears how many bytes of the output's start its node no
	// longer keeps; nil ignores it.
	Dropped func(int64)
	// Skipped hears how many bytes went by unread, where they did: the
	// node dropped them while this reader was behind; nil ignores it.
	Skipped func(int64)
}

// opened is a detached job opened on its node.
type opened struct {
	job    *hacv1.Job
	node   string
	worker hacv1connect.WorkerServiceClient
	ticket string
}

// open asks the control plane for access to a job on its node.
func (c *Conn) open(ctx context.Context, jobID string, access hacv1.JobAccess) (*opened, error) {
	resp, err := c.Accel.OpenJob(ctx, connect.NewRequest(&hacv1.OpenJobRequest{JobId: jobID, Access: access}))
	if err != nil {
		return nil, err
	}
	w := resp.Msg.Worker
	wc, err := Worker(w)
	if err != nil {
		return nil, err
	}
	return &opened{job: resp.Msg.Job, node: w.Node, worker: wc, ticket: w.Ticket}, nil
}

// GetJob returns one of the caller's jobs.
func (c *Conn) GetJob(ctx context.Context, jobID string) (*hacv1.Job, error) {
	resp, err := c.Accel.GetJob(ctx, connect.NewRequest(&hacv1.GetJobRequest{JobId: jobID}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Job, nil
}

// Logs writes a detached job's output as its node kept it and, with
// follow, what comes until the program ends. It returns the program's
// end once the stream reached it, else nil.
func (c *Conn) Logs(ctx context.Context, jobID string, follow bool, out Output) (*hacv1.Exited, error) {
	o, err := c.open(ctx, jobID, hacv1.JobAccess_JOB_ACCESS_OUTPUT)
	if err != nil {
		return nil, err
	}
	req := connect.NewRequest(&hacv1.OutputRequest{Ticket: o.ticket, Follow: follow})
	req.Header().Set(ticket.Header, o.ticket)
	stream, err := o.worker.Output(ctx, req)
	if err != nil {
		return nil, lostNode(o.node, err)
	}
	defer stream.Close()
	for stream.Receive() {
		if exit := out.write(stream.Msg()); exit != nil {
			return exit, nil
		}
	}
	if err := stream.Err(); err != nil && ctx.Err() == nil {
		return nil, lostNode(o.node, err)
	}
	return nil, ctx.Err()
}

// write writes one message of an output stream; it returns the end.
func (out Output) write(m *hacv1.OutputResponse) *hacv1.Exited {
	switch r := m.Msg.(type) {
	case *hacv1.OutputResponse_Stdout:
		out.Stdout.Write(r.Stdout)
	case *hacv1.OutputResponse_Stderr:
		out.Stderr.Write(r.Stderr)
	case *hacv1.OutputResponse_Dropped:
		if out.Dropped != nil {
			out.Dropped(r.Dropped)
		}
	case *hacv1.OutputResponse_Skipped:
		if out.Skipped != nil {
			out.Skipped(r.Skipped)
		}
	case *hacv1.OutputResponse_Exited:
		return r.Exited
	}
	return nil
}

// AttachIO is what an attacher passes to a detached job's program.
type AttachIO struct {
	// Signals go to the program as they come.
	Signals <-chan syscall.Signal
	// Stdin, when not nil, goes to the program's standard input if the job
	// keeps it open (hac run -d -i); its end ends the program's input.
	Stdin io.Reader
	// Attached, when not nil, is called once the node took the attacher
	// in; stdin says whether Stdin goes to the program.
	Attached func(stdin bool)
}

// Attach follows a running detached job's output and passes it signals
// and input, until the program ends (its end is returned) or ctx ends
// (nil: the job runs on).
func (c *Conn) Attach(ctx context.Context, jobID string, in AttachIO, out Output) (*hacv1.Exited, error) {
	o, err := c.open(ctx, jobID, hacv1.JobAccess_JOB_ACCESS_ATTACH)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := o.worker.Attach(actx)
	stream.RequestHeader().Set(ticket.Header, o.ticket)
	if err := stream.Send(&hacv1.AttachRequest{Msg: &hacv1.AttachRequest_Open{Open: &hacv1.OutputRequest{Ticket: o.ticket, Follow: true}}}); err != nil {
		return nil, lostNode(o.node, err)
	}
	input := make(chan []byte) // nil: the input's end
	// One goroutine sends: signals and input, in the order they come.
	go func() {
		for {
			var msg *hacv1.AttachRequest
			select {
			case <-actx.Done():
				// The request's end lets the transport see the cancel: a
				// stream whose request is open waits on it, not on ctx.
				stream.CloseRequest()
				return
			case sig := <-in.Signals:
				msg = &hacv1.AttachRequest{Msg: &hacv1.AttachRequest_Signal{Signal: int32(sig)}}
			case p := <-input:
				msg = &hacv1.AttachRequest{Msg: &hacv1.AttachRequest_Stdin{Stdin: p}}
				if p == nil {
					msg.Msg = &hacv1.AttachRequest_CloseStdin{CloseStdin: true}
				}
			}
			if stream.Send(msg) != nil {
				return
			}
		}
	}()
	for {
		msg, err := stream.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil // detached: the job runs on
			}
			return nil, lostNode(o.node, err)
		}
		if open, ok := msg.Msg.(*hacv1.OutputResponse_StdinOpen); ok {
			stdin := open.StdinOpen && in.Stdin != nil
			if stdin {
				go readInput(actx, in.Stdin, input)
			}
			if in.Attached != nil {
				in.Attached(stdin)
			}
			continue
		}
		if exit := out.write(msg); exit != nil {
			stream.CloseRequest()
			return exit, nil
		}
	}
}

// readInput passes what r reads to input, then nil at its end (io.EOF:
// Ctrl+D on a terminal, the end of a pipe). A read error (a terminal that
// went away) ends nothing: the program's input stays open.
func readInput(ctx context.Context, r io.Reader, input chan<- []byte) {
	send := func(p []byte) bool {
		select {
		case input <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		buf := make([]byte, 32<<10)
		n, err := r.Read(buf)
		if n > 0 && !send(buf[:n]) {
			return
		}
		if errors.Is(err, io.EOF) {
			send(nil)
		}
		if err != nil {
			return
		}
	}
}

// Fetched is what Fetch wrote.
type Fetched struct {
	Files int
	// Warnings name files not written, or written beside the user's.
	Warnings []string
}

// Fetch brings a detached job's created and changed files into dir, as a
// run's sync-back does: a file changed here since the job's upload (or
// since the last fetch, as rec says) is not overwritten; the job's version
// lands beside it. rec, when not nil, is updated with what was written.
func (c *Conn) Fetch(ctx context.Context, jobID, dir string, rec *Record) (Fetched, error) {
	var got Fetched
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return got, fmt.Errorf("the folder %s is gone: name another, as in hac fetch %s DIR", dir, jobID)
	}
	o, err := c.open(ctx, jobID, hacv1.JobAccess_JOB_ACCESS_FETCH)
	if err != nil {
		return got, err
	}
	before := &hacv1.Manifest{}
	if rec != nil {
		before = rec.Files
	}
	sb, err := workspace.NewSyncBack(dir, before, jobID)
	if err != nil {
		return got, err
	}
	req := connect.NewRequest(&hacv1.FetchRequest{Ticket: o.ticket})
	req.Header().Set(ticket.Header, o.ticket)
	stream, err := o.worker.Fetch(ctx, req)
	if err != nil {
		sb.Finish()
		return got, lostNode(o.node, err)
	}
	defer stream.Close()
	done := false
	for !done && stream.Receive() {
		switch m := stream.Msg().Msg.(type) {
		case *hacv1.FetchResponse_Changed:
			if err := sb.Receive(m.Changed); err != nil {
				got.Warnings = append(got.Warnings, err.Error())
			} else if m.Changed.Last {
				got.Files++
			}
		case *hacv1.FetchResponse_Done:
			done = true
		}
	}
	got.Warnings = append(got.Warnings, sb.Finish()...)
	if rec != nil {
		rec.Files = sb.Written()
	}
	if !done {
		err := stream.Err()
		if err == nil {
			err = errors.New("the stream ended early")
		}
		return got, fmt.Errorf("not every file came back (those written are complete; fetch again for the rest): %w", lostNode(o.node, err))
	}
	return got, nil
}

// Stop stops a job (hac cancel): a waiting one is withdrawn, a running
// one gets SIGTERM and, after grace (nil: the control plane's default),
// SIGKILL to its whole tree.
func (c *Conn) Stop(ctx context.Context, jobID string, grace *time.Duration) (*hacv1.Job, error) {
	req := &hacv1.StopJobRequest{JobId: jobID}
	if grace != nil {
		req.GraceSeconds, req.HasGrace = int32(grace.Round(time.Second)/time.Second), true
	}
	resp, err := c.Accel.StopJob(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Job, nil
}

// The job states the API reports that are not final (store.JobState
// holds them all).
const (
	stateQueued  = "queued"
	stateRunning = "running"
)

// Ended reports whether a job's state is final.
func Ended(j *hacv1.Job) bool {
	s := j.GetState()
	return s != stateQueued && s != stateRunning
}

// Running reports whether a job holds its GPUs now.
func Running(j *hacv1.Job) bool { return j.GetState() == stateRunning }

// WaitEnded polls a job until it ended or ctx ends.
func (c *Conn) WaitEnded(ctx context.Context, jobID string) (*hacv1.Job, error) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		j, err := c.GetJob(ctx, jobID)
		if err != nil || Ended(j) {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-t.C:
		}
	}
}
