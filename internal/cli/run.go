package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/workspace"
)

// errSyncIncomplete means the program ended but the files it changed did
// not all come back.
var errSyncIncomplete = errors.New("the program ended, but the files it changed did not all come back (files already written are complete; run it again for the rest)")

// Exit codes of hac run besides the program's own.
const (
	exitGaveUp   = 75  // EX_TEMPFAIL: --wait ran out
	exitCanceled = 130 // Ctrl+C while waiting
)

func (a *app) runCmd() *cobra.Command {
	var opts runOptions
	var priority int
	var envNames []string
	cmd := &cobra.Command{
		Use:   "run [-d] [--wait DURATION] -- COMMAND [ARGS...]",
		Short: "Run a program on the pool's GPUs",
		Long: `Run a program on GPUs from the pool, sized by the server's accelerator model.

The current directory goes with it (files named in .hacignore or .gitignore
stay behind), and the files it creates or changes there come back when it
ends. Output, input, the terminal and signals work as if it ran here; the
exit code is the program's. On a server made by hac (or registered with
--image) it runs on this server's own files: its interpreter, the packages
you installed (pip install --user, virtualenvs, conda), your home folder.

Of this shell's environment only the locale (LANG, LANGUAGE, LC_*), the
terminal (TERM, COLORTERM), the time zone (TZ), PYTHON* and OMP_* go with
it, and what -e names: -e NAME forwards NAME's value, -e NAME=VALUE sets it;
on this server's own files also PATH, LD_LIBRARY_PATH, HOME and the active
virtualenv or conda environment. Tokens, keys and passwords stay here
unless named.

With -d the program runs detached: hac run prints its job id once it has
started and leaves it running. Its node keeps its output (the last part)
and, after it ends, its files: hac logs, hac attach, hac fetch and
hac cancel take the job id.`,
		Example: `  hac run -- python3 train.py --epochs 3
  hac run -e WANDB_API_KEY -e RUN_NAME=baseline -- python3 train.py
  hac run --wait 10m -- python3 eval.py
  job=$(hac run -d -- python3 train.py --epochs 50); hac logs -f $job`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || args[0] == "" {
				return usageError{errors.New("no command given: use hac run -- COMMAND [ARGS...], such as hac run -- python3 train.py")}
			}
			if opts.wait < 0 {
				return usageError{errors.New("--wait must not be negative")}
			}
			if cmd.Flags().Changed("priority") {
				opts.priority = &priority
			}
			env, err := forwardedEnv(os.Environ(), envNames)
			if err != nil {
				return usageError{err}
			}
			opts.argv, opts.env = args, env
			return a.run(cmd.Context(), opts)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().BoolVarP(&opts.detach, "detach", "d", false, "run detached: print the job id once the program started, and leave it running")
	cmd.Flags().DurationVar(&opts.wait, "wait", 0, "give up (exit 75) if the accelerator is not ready within this time; 0 waits forever")
	cmd.Flags().IntVar(&priority, "priority", 0, "queue priority of this run, -99..99 (at most your own unless admin)")
	cmd.Flags().StringArrayVarP(&envNames, "env", "e", nil, "forward NAME (or set NAME=VALUE) in the program's environment; repeatable")
	return cmd
}

// say prints one of hac run's status lines on stderr.
func (a *app) say(level, format string, args ...any) {
	fmt.Fprintf(a.stderr, "["+level+"] "+format+"\n", args...)
}

// runOptions are hac run's command line.
type runOptions struct {
	argv, env []string
	wait      time.Duration
	priority  *int
	detach    bool
}

// errStartedDetached ends a detached run's session once its program started.
var errStartedDetached = errors.New("started detached")

func (a *app) run(ctx context.Context, o runOptions) error {
	argv, env := o.argv, o.env
	c, err := a.client()
	if err != nil {
		return err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	// Hash the workspace while the control plane finds resources.
	type walked struct {
		m   *hacv1.Manifest
		env *hacv1.Environment
		// envRoot is the folder the environment's paths are below.
		envRoot string
		err     error
	}
	manifest := make(chan walked, 1)
	go func() {
		// Unchanged files are not read again: their hashes are kept by
		// identity (workspace.HashCache), per folder, in the user's cache.
		var hashes *workspace.HashCache
		if p, err := workspace.HashCachePath(cwd); err == nil {
			hashes = workspace.OpenHashCache(p)
		}
		m, err := workspace.Walk(cwd, hashes)
		if err == nil && hashes != nil {
			hashes.Save() // a cache: without it the next run reads every file
		}
		manifest <- walked{m: m, err: err}
	}()
	// What the server adds to its image: read meanwhile on a server made
	// by hac, whose jobs run on its image; on another machine, once the
	// grant says they do.
	environment := make(chan walked, 1)
	walkEnvironment := func() {
		env, root, err := serverEnvironment(cwd)
		environment <- walked{env: env, envRoot: root, err: err}
	}
	if madeByHac() {
		go walkEnvironment()
	}

	a.say("info", "Requesting resources for %s from the server...", catalog.DisplayName)
	sigs := make(chan os.Signal, 4)
	// SIGQUIT too: Ctrl+\ goes to the program, not to a Go stack dump.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	grant, err := a.allocate(ctx, c, o, sigs)
	if err != nil {
		return err
	}
	jobID := grant.JobId
	leaseCtx, stopLease := context.WithCancel(ctx)
	defer stopLease()
	held := client.NewLease(c, jobID)
	go held.Keep(leaseCtx, time.Duration(grant.LeaseTtlSeconds)*time.Second)
	release := func(code *int32) { c.Release(ctx, jobID, code) }

	a.say("info", "Initializing the worker daemon for %s...", catalog.DisplayName)
	w := <-manifest
	if w.err != nil {
		release(nil)
		return fmt.Errorf("read the current folder: %w", w.err)
	}
	if grant.OnImage {
		if !madeByHac() {
			walkEnvironment()
		}
		e := <-environment
		if e.err != nil {
			release(nil)
			return fmt.Errorf("read the server's files: %w", e.err)
		}
		w.env, w.envRoot = e.env, e.envRoot
		a.shadowedTorch(w.env)
		env = append(env, onImageEnv(os.Environ())...)
	}
	for i, wk := range grant.Workers {
		a.say("info", "[%d/%d] Connecting to resources on the server (%s)...", i+1, len(grant.Workers), wk.Address)
	}
	code, err := a.execute(ctx, c, grant, argv, env, cwd, w.m, serverFiles{w.env, w.envRoot}, sigs, held)
	stopLease()
	if errors.Is(err, errStartedDetached) {
		return nil // the job holds its resources on: no release
	}
	if errors.Is(err, errSyncIncomplete) {
		release(&code)
		a.say("error", "%v", err)
		return exitCode(int(code))
	}
	if err != nil {
		release(nil)
		return err
	}
	release(&code)
	return exitCode(int(code))
}

// allocate waits for a grant, printing SPEC A3/A5/A6 lines as the wait
// changes.
func (a *app) allocate(ctx context.Context, c *client.Conn, o runOptions, sigs <-chan os.Signal) (*hacv1.Grant, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait := o.wait
	req := &hacv1.AllocateRequest{Server: c.Config.Server, Command: o.argv, ClientPid: int64(os.Getpid()), Detach: o.detach}
	if o.priority != nil {
		req.Priority, req.HasPriority = int32(*o.priority), true
	}
	stream, err := c.Accel.Allocate(actx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var gaveUp, interrupted bool
	var mu sync.Mutex
	if wait > 0 {
		t := time.AfterFunc(wait, func() { mu.Lock(); gaveUp = true; mu.Unlock(); cancel() })
		defer t.Stop()
	}
	go func() {
		select {
		case <-sigs:
			mu.Lock()
			interrupted = true
			mu.Unlock()
			cancel()
		case <-actx.Done():
		}
	}()
	var last *hacv1.Waiting
	for stream.Receive() {
		switch ev := stream.Msg().Event.(type) {
		case *hacv1.AllocateResponse_Grant:
			return ev.Grant, nil
		case *hacv1.AllocateResponse_Waiting:
			a.sayWaiting(ev.Waiting, last)
			last = ev.Waiting
		}
	}
	mu.Lock()
	defer mu.Unlock()
	switch {
	case gaveUp:
		return nil, &exitError{code: exitGaveUp, err: fmt.Errorf("gave up waiting for %s after %v (--wait)", catalog.DisplayName, wait)}
	case interrupted:
		return nil, exitCode(exitCanceled)
	case stream.Err() != nil:
		return nil, stream.Err()
	}
	return nil, errors.New("the control plane ended the request without a grant: try again")
}

func (a *app) sayWaiting(w, last *hacv1.Waiting) {
	name := catalog.DisplayName
	switch w.Reason {
	case hacv1.Waiting_REASON_BUSY:
		if last != nil && last.Reason == w.Reason && last.GetHolder().GetJobId() == w.GetHolder().GetJobId() {
			return
		}
		h := w.GetHolder()
		a.say("warning", "%s is already in use by another process:", name)
		a.say("warning", "  (pid: %d) %s", h.GetClientPid(), output.Clean(h.GetCommand()))
		a.say("warning", "Two or more processes cannot use %s at the same time. The program will resume automatically after the process %d terminates...", name, h.GetClientPid())
	case hacv1.Waiting_REASON_POOL_FULL:
		if last == nil || last.Reason != w.Reason {
			a.say("warning", "Not enough resources are currently available for %s. All resources in the system are being used by other users. The program will resume automatically when resources become available...", name)
		}
		eta := ""
		if w.EstimatedStart != nil {
			eta = " Estimated start: " + aboutIn(time.Until(w.EstimatedStart.AsTime())) + " (" + estimateBasis(w) + ")."
		}
		a.say("info", "Queue position: %d of %d.%s", w.Position, w.QueueLength, eta)
	}
}

// execute runs the program on one worker: upload, stdio, signals, exit
// code, changed files.
func (a *app) execute(ctx context.Context, c *client.Conn, grant *hacv1.Grant, argv, env []string, cwd string, m *hacv1.Manifest, osEnv serverFiles, sigs <-chan os.Signal, lease *client.Lease) (int32, error) {
	wk, jobID := grant.Workers[0], grant.JobId
	wc, err := client.Worker(wk)
	if err != nil {
		return 0, err
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := wc.Exec(ectx)
	stream.RequestHeader().Set(ticket.Header, wk.Ticket)
	in, isFile := a.stdin.(*os.File)
	// A detached program has no terminal: no one is there to type.
	tty := !grant.Detached && isFile && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))
	start := &hacv1.Start{Ticket: wk.Ticket, Argv: argv, Env: env, Tty: tty, Manifest: m, Cwd: cwd, Environment: osEnv.env}
	if tty {
		if cols, rows, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
			start.Window = &hacv1.WindowSize{Rows: uint32(rows), Cols: uint32(cols)}
		}
	}
	var sendMu sync.Mutex
	send := func(r *hacv1.ExecRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	lost := func(err error) error {
		return fmt.Errorf("lost the connection to %s on %s: %v", catalog.DisplayName, wk.Node, userMessage(err))
	}
	if err := send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Start{Start: start}}); err != nil {
		return 0, lost(err)
	}
	msg, err := stream.Receive()
	if err != nil {
		return 0, lost(err)
	}
	if e := msg.GetError(); e != "" {
		return 0, errors.New(e)
	}
	need := msg.GetNeedBlobs()
	if need == nil {
		return 0, errors.New("protocol error: the node did not ask for the workspace")
	}
	a.say("info", "Establishing links to the resources...")
	sources := []client.BlobSource{{Root: cwd, Manifest: m}}
	if osEnv.env != nil {
		sources = append(sources, client.BlobSource{Root: osEnv.root, Manifest: osEnv.env.Layer})
	}
	if err := a.upload(sources, need.Sha256, send); err != nil {
		return 0, lost(err)
	}

	var restore func()
	defer func() {
		if restore != nil {
			restore()
		}
	}()
	var stdinGate sync.RWMutex // held while the program is suspended (Ctrl+Z)
	sync, err := workspace.NewSyncBack(cwd, m, jobID)
	if err != nil {
		return 0, err
	}
	var code int32
	exited := false
	frozen := make(chan bool, 1) // the node's answers to Ctrl+Z and fg
	for {
		msg, err := stream.Receive()
		if err != nil {
			sync.Finish()
			if exited {
				// The program is done, but not every file it changed came
				// back: say so, and never exit 0 on that.
				return max(code, 1), fmt.Errorf("%w: %v", errSyncIncomplete, lost(err))
			}
			return 0, lost(err)
		}
		switch r := msg.Msg.(type) {
		case *hacv1.ExecResponse_Started:
			if grant.Detached {
				stream.CloseRequest()
				sync.Finish()
				a.startedDetached(c, jobID, wk.Node, cwd, m)
				return 0, errStartedDetached
			}
			a.say("info", "%s is ready to use.", catalog.DisplayName)
			if tty {
				if st, err := term.MakeRaw(int(in.Fd())); err == nil {
					restore = func() { term.Restore(int(in.Fd()), st) }
				}
				go watchWindow(ectx, send)
			}
			go pumpStdin(ectx, a.stdin, func(r *hacv1.ExecRequest) error {
				stdinGate.RLock() // held while the program is suspended
				defer stdinGate.RUnlock()
				return send(r)
			})
			if !tty { // on a terminal, Ctrl+Z is a key for the program's own terminal
				go a.suspendOnCtrlZ(ectx, lease, send, frozen, &stdinGate)
			}
			go a.forwardSignals(ectx, sigs, send)
		case *hacv1.ExecResponse_Stdout:
			os.Stdout.Write(r.Stdout)
		case *hacv1.ExecResponse_Stderr:
			a.stderr.Write(r.Stderr)
		case *hacv1.ExecResponse_Exited:
			if restore != nil {
				restore()
				restore = nil
			}
			code, exited = r.Exited.ExitCode, true
			if r.Exited.Reason != "" && r.Exited.Reason != "the client disconnected" {
				a.say("error", "%s", r.Exited.Reason)
			}
		case *hacv1.ExecResponse_Changed:
			if err := sync.Receive(r.Changed); err != nil {
				a.say("warning", "%v", err)
			}
		case *hacv1.ExecResponse_Suspended:
			select {
			case frozen <- r.Suspended:
			default:
			}
		case *hacv1.ExecResponse_ChangesDone:
			for _, w := range sync.Finish() {
				a.say("warning", "%s", w)
			}
			send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_SyncDone{SyncDone: true}})
			stream.CloseRequest()
			return code, nil
		case *hacv1.ExecResponse_Error:
			return 0, errors.New(r.Error)
		}
	}
}

func pumpStdin(ctx context.Context, r io.Reader, send func(*hacv1.ExecRequest) error) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
				return
			}
		}
		if err != nil {
			send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_CloseStdin{CloseStdin: true}})
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// forwardSignals sends the client's signals to the program. A second
// Ctrl+C within killAfterInterrupts of the first kills the program's whole
// tree, as srun does: a program that traps SIGINT can still be stopped
// from the keyboard.
func (a *app) forwardSignals(ctx context.Context, sigs <-chan os.Signal, send func(*hacv1.ExecRequest) error) {
	var lastInterrupt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sigs:
			sig, ok := s.(syscall.Signal)
			if !ok {
				continue
			}
			if sig == syscall.SIGINT {
				if !lastInterrupt.IsZero() && time.Since(lastInterrupt) < killAfterInterrupts {
					a.say("warning", "Interrupted twice: killing the program and everything it started...")
					sig = syscall.SIGKILL
				} else {
					a.say("info", "Interrupt sent to the program; press Ctrl+C again within %v to kill it.", killAfterInterrupts)
				}
				lastInterrupt = time.Now()
			}
			send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Signal{Signal: int32(sig)}})
		}
	}
}

// suspendOnCtrlZ suspends the program with the client, as a local
// program is suspended: on SIGTSTP (Ctrl+Z), or SIGTTIN and SIGTTOU (the
// client read or wrote its terminal from the background), it asks the
// control plane for the suspended lease (a stopped client renews nothing;
// the GPUs stay held), has the node freeze the program's tree, and stops
// the client; when the shell continues it (fg), it thaws the program and
// goes back to the normal lease. Stdin waits meanwhile (stdinGate), so
// that nothing piles up in front of a frozen program. A client that is
// not in the foreground of a terminal (a script, a service: no one to
// continue it) does not stop.
func (a *app) suspendOnCtrlZ(ctx context.Context, lease *client.Lease, send func(*hacv1.ExecRequest) error, frozen <-chan bool, stdinGate *sync.RWMutex) {
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	defer signal.Stop(stops)
	answer := func() (bool, string) { // the node's answer to the last request
		select {
		case ok := <-frozen:
			return ok, ""
		case <-time.After(5 * time.Second):
			return false, "the node did not answer (an older hac agent?)"
		case <-ctx.Done():
			return false, "the run ended"
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-stops:
		}
		if !inTerminalForeground() {
			a.say("warning", "Not suspended: this client is not in the foreground of a terminal, so no one could continue it.")
			continue
		}
		if err := lease.Suspend(ctx, true); err != nil {
			a.say("warning", "Not suspended: the control plane would not keep the job while the client is stopped (%v).", userMessage(err))
			continue
		}
		stdinGate.Lock()
		drain(frozen)
		send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Signal{Signal: int32(syscall.SIGTSTP)}})
		// Stop only once the node has frozen the program: a stopped
		// process sends nothing, not even what it queued.
		if ok, why := answer(); !ok {
			if why == "" {
				why = "the node could not freeze the program"
			}
			a.say("warning", "Not suspended: %s.", why)
			send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Signal{Signal: int32(syscall.SIGCONT)}}) // if it froze late
			stdinGate.Unlock()
			lease.Suspend(ctx, false)
			continue
		}
		a.say("info", "The program is suspended; fg resumes it (its GPUs stay held meanwhile, for up to %v).", lease.SuspendedFor())
		stopUntilContinued()
		send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Signal{Signal: int32(syscall.SIGCONT)}})
		answer() // thawed: drop the answer, so that the next Ctrl+Z reads its own
		stdinGate.Unlock()
		lease.Suspend(ctx, false)
		drain(stops) // a second Ctrl+Z typed while this one was on its way
	}
}

// stopUntilContinued stops this process until a SIGCONT (fg). SIGSTOP,
// not SIGTSTP: Go drops a SIGTSTP it once relayed, and a shell takes
// either for a stopped job.
func stopUntilContinued() {
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, syscall.SIGCONT)
	defer signal.Stop(cont)
	syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	<-cont
}

// inTerminalForeground reports whether this process is in the foreground
// process group of its controlling terminal: whether a shell can fg it.
func inTerminalForeground() bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false
	}
	defer tty.Close()
	pgrp, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == syscall.Getpgrp()
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

// killAfterInterrupts is how soon a second Ctrl+C kills the program (SPEC A12).
const killAfterInterrupts = 2 * time.Second

func watchWindow(ctx context.Context, send func(*hacv1.ExecRequest) error) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if cols, rows, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
				send(&hacv1.ExecRequest{Msg: &hacv1.ExecRequest_Resize{Resize: &hacv1.WindowSize{Rows: uint32(rows), Cols: uint32(cols)}}})
			}
		}
	}
}

// estimateBasis says what a start estimate rests on.
func estimateBasis(w *hacv1.Waiting) string {
	of := map[string]string{"command": "of this command", "model": "of this model", "pool": "in the pool"}[w.EstimateBasis]
	if of == "" {
		return "from recent run times"
	}
	return fmt.Sprintf("from %d recent runs %s", w.EstimateSamples, of)
}

// aboutIn says a wait in words: "in about 4 minutes", "any moment now".
func aboutIn(d time.Duration) string {
	switch {
	case d < 30*time.Second:
		return "any moment now"
	case d < 90*time.Second:
		return "in about a minute"
	case d < 90*time.Minute:
		return fmt.Sprintf("in about %d minutes", int(d.Round(time.Minute).Minutes()))
	default:
		return fmt.Sprintf("in about %d hours", int(d.Round(time.Hour).Hours()))
	}
}
