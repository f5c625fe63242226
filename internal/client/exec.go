package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/workspace"
)

// Program is what runs on a granted node: its command line and
// environment, the folder that goes with it (Dir, whose files Files
// lists, shown at the same path), and for a job on its server's image the
// server's own files (Server, whose paths are below ServerRoot).
type Program struct {
	Argv, Env  []string
	Dir        string
	Files      *hacv1.Manifest
	Server     *hacv1.Environment
	ServerRoot string
	// TTY runs it on a terminal of Window's size.
	TTY    bool
	Window *hacv1.WindowSize
	// KeepStdin keeps a detached program's standard input open, for
	// Attach to write to; without it the program reads an empty one.
	KeepStdin bool
}

// ExecIO is where a run's session goes. Its functions are called from
// Exec's goroutine, in the order things happen.
type ExecIO struct {
	Stdout, Stderr io.Writer
	// Progress, when not nil, returns what hears the upload's bytes.
	Progress func(*Upload) io.Writer
	// Started is called once the program runs (a detached one is left
	// then): ctl passes it input, signals and window sizes.
	Started func(ctl *Control)
	// Exited is called when the program ended, before its files come back.
	Exited func(*hacv1.Exited)
	// Warn hears warnings for the user as they come: files that changed
	// while they were uploaded, files of the program's not written here or
	// written beside, a detached job's record that could not be kept. Nil:
	// ExecResult.Warnings has them.
	Warn func(string)
}

// ExecResult is how a run's session ended.
type ExecResult struct {
	// Code is the program's exit code, once Exited.
	Code   int32
	Exited bool
	// Detached: the program started detached and runs on.
	Detached bool
	// Warnings are ExecIO.Warn's, when it is nil.
	Warnings []string
}

// ErrSyncIncomplete means the program ended, but the files it changed did
// not all come back.
var ErrSyncIncomplete = errors.New("the program ended, but the files it changed did not all come back (files already written are complete; run it again for the rest)")

// Exec runs prog on the grant's first node: the workspace goes up (what
// the node lacks of it), stdio and signals go both ways, and the files the
// program created or changed come back into prog.Dir (workspace.SyncBack)
// as it runs and when it ends. A detached grant's session ends once the
// program started; this machine then keeps a Record of it for Fetch.
func (c *Conn) Exec(ctx context.Context, grant *hacv1.Grant, prog Program, out ExecIO) (ExecResult, error) {
	var res ExecResult
	warn := func(msg string) {
		if out.Warn != nil {
			out.Warn(msg)
		} else {
			res.Warnings = append(res.Warnings, msg)
		}
	}
	warnAll := func(msgs []string) {
		for _, m := range msgs {
			warn(m)
		}
	}
	wk := grant.Workers[0]
	wc, err := Worker(wk)
	if err != nil {
		return res, err
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := wc.Exec(ectx)
	stream.RequestHeader().Set(ticket.Header, wk.Ticket)
	start := &hacv1.Start{Ticket: wk.Ticket, Argv: prog.Argv, Env: prog.Env, Tty: prog.TTY && !grant.Detached, Manifest: prog.Files,
		Cwd: prog.Dir, Environment: prog.Server, KeepStdin: prog.KeepStdin && grant.Detached}
	if start.Tty {
		start.Window = prog.Window
	}
	ctl := &Control{ctx: ectx, frozen: make(chan bool, 1)}
	ctl.send = func(r *hacv1.ExecRequest) error {
		ctl.mu.Lock()
		defer ctl.mu.Unlock()
		return stream.Send(r)
	}
	lost := func(err error) error { return lostNode(wk.Node, err) }
	if err := ctl.send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Start{Start: start}}); err != nil {
		return res, lost(err)
	}
	msg, err := stream.Receive()
	if err != nil {
		return res, lost(err)
	}
	if e := msg.GetError(); e != "" {
		return res, errors.New(e)
	}
	need := msg.GetNeedBlobs()
	if need == nil {
		return res, errors.New("protocol error: the node did not ask for the workspace")
	}
	sources := []BlobSource{{Root: prog.Dir, Manifest: prog.Files}}
	if prog.Server != nil {
		sources = append(sources, BlobSource{Root: prog.ServerRoot, Manifest: prog.Server.Layer, Layer: true})
	}
	up, err := PlanUpload(sources, need.Sha256)
	if err != nil {
		return res, err
	}
	var progress io.Writer = io.Discard
	if out.Progress != nil {
		progress = out.Progress(up)
	}
	err = up.Send(ctl.send, progress)
	for _, path := range up.Changed {
		warn(fmt.Sprintf("%s changed while it was uploaded: the program sees it as it was read then (list it in .hacignore to leave it behind)", path))
	}
	if err != nil {
		return res, lost(err)
	}

	sync, err := workspace.NewSyncBack(prog.Dir, prog.Files, grant.JobId)
	if err != nil {
		return res, err
	}
	for {
		msg, err := stream.Receive()
		if err != nil {
			warnAll(sync.Finish())
			if res.Exited {
				// The program is done, but not every file it changed came
				// back: say so, and never exit 0 on that.
				res.Code = max(res.Code, 1)
				return res, fmt.Errorf("%w: %v", ErrSyncIncomplete, lost(err))
			}
			return res, lost(err)
		}
		switch r := msg.Msg.(type) {
		case *hacv1.ExecResponse_Started:
			if grant.Detached {
				stream.CloseRequest()
				sync.Finish()
				if err := NewRecord(c.Addr, grant.JobId, prog.Dir, prog.Files).Save(); err != nil {
					warn(fmt.Sprintf("could not keep a record of job %s on this machine (%v): hac fetch will need the folder named, as in hac fetch %s %s", grant.JobId, err, grant.JobId, prog.Dir))
				}
				res.Detached = true
				return res, nil
			}
			if out.Started != nil {
				out.Started(ctl)
			}
		case *hacv1.ExecResponse_Stdout:
			out.Stdout.Write(r.Stdout)
		case *hacv1.ExecResponse_Stderr:
			out.Stderr.Write(r.Stderr)
		case *hacv1.ExecResponse_Exited:
			res.Code, res.Exited = r.Exited.ExitCode, true
			if out.Exited != nil {
				out.Exited(r.Exited)
			}
		case *hacv1.ExecResponse_Changed:
			if err := sync.Receive(r.Changed); err != nil {
				warn(err.Error())
			}
		case *hacv1.ExecResponse_Suspended:
			select {
			case ctl.frozen <- r.Suspended:
			default:
			}
		case *hacv1.ExecResponse_ChangesDone:
			warnAll(sync.Finish())
			ctl.send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_SyncDone{SyncDone: true}})
			stream.CloseRequest()
			return res, nil
		case *hacv1.ExecResponse_Error:
			return res, errors.New(r.Error)
		}
	}
}

// Control passes a running program its input, signals and window sizes.
// Its methods may be called from any goroutine.
type Control struct {
	ctx    context.Context
	mu     sync.Mutex
	send   func(*hacv1.ExecRequest) error
	frozen chan bool // the node's answers to Freeze
}

// Stdin writes to the program's standard input.
func (c *Control) Stdin(p []byte) error {
	return c.send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Stdin{Stdin: append([]byte(nil), p...)}})
}

// CloseStdin ends the program's standard input.
func (c *Control) CloseStdin() error {
	return c.send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_CloseStdin{CloseStdin: true}})
}

// Signal sends the program a signal: SIGINT, SIGTERM, SIGHUP, SIGQUIT,
// SIGUSR1, SIGUSR2, SIGWINCH to it; SIGKILL to its whole tree.
func (c *Control) Signal(sig syscall.Signal) error {
	return c.send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Signal{Signal: int32(sig)}})
}

// Resize tells the program's terminal its new size.
func (c *Control) Resize(rows, cols uint16) error {
	return c.send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Resize{Resize: &hacv1.WindowSize{Rows: uint32(rows), Cols: uint32(cols)}}})
}

// Freeze freezes (on) or thaws the program's whole tree and waits for the
// node to say it did; why says why not.
func (c *Control) Freeze(on bool) (ok bool, why string) {
	drain(c.frozen) // a late answer to an earlier request
	sig := syscall.SIGCONT
	if on {
		sig = syscall.SIGTSTP
	}
	if err := c.Signal(sig); err != nil {
		return false, Message(err)
	}
	select {
	case ok := <-c.frozen:
		if on && !ok {
			return false, "the node could not freeze the program"
		}
		return true, ""
	case <-time.After(5 * time.Second):
		return false, "the node did not answer (an older hac agent?)"
	case <-c.ctx.Done():
		return false, "the run ended"
	}
}

func drain[T any](ch <-chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
