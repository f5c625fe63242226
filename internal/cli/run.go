package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/workspace"
)

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
hac cancel take the job id. With -d -i its standard input stays open:
what you type in hac attach goes to it.`,
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
	cmd.Flags().BoolVarP(&opts.interactive, "interactive", "i", false, "with -d: keep the program's standard input open for hac attach to type into (else it reads an empty one)")
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
	// interactive keeps a detached program's stdin open (-i).
	interactive bool
}

func (a *app) run(ctx context.Context, o runOptions) error {
	if o.interactive && !o.detach {
		return usageError{errors.New("-i keeps a detached program's input open (hac run -d -i): an attached run reads this terminal already")}
	}
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
	prog := client.Program{Argv: argv, Env: env, Dir: cwd, Files: w.m, Server: w.env, ServerRoot: w.envRoot, KeepStdin: o.interactive}
	res, err := a.execute(ctx, c, grant, prog, sigs, held)
	stopLease()
	code := res.Code
	switch {
	case err == nil && res.Detached:
		a.startedDetached(jobID, grant.Workers[0].Node)
		return nil // the job holds its resources on: no release
	case errors.Is(err, client.ErrSyncIncomplete):
		release(&code)
		a.say("error", "%v", err)
		return exitCode(int(code))
	case err != nil:
		release(nil)
		return err
	}
	release(&code)
	return exitCode(int(code))
}

// allocate waits for a grant, printing SPEC A3/A5/A6 lines as the wait
// changes; --wait running out or Ctrl+C withdraws the request.
func (a *app) allocate(ctx context.Context, c *client.Conn, o runOptions, sigs <-chan os.Signal) (*hacv1.Grant, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var gaveUp, interrupted atomic.Bool
	if o.wait > 0 {
		t := time.AfterFunc(o.wait, func() { gaveUp.Store(true); cancel() })
		defer t.Stop()
	}
	go func() {
		select {
		case <-sigs:
			interrupted.Store(true)
			cancel()
		case <-actx.Done():
		}
	}()
	var last *hacv1.Waiting
	grant, err := c.Allocate(actx, client.Allocation{Argv: o.argv, ClientPID: int64(os.Getpid()), Priority: o.priority, Detach: o.detach},
		func(w *hacv1.Waiting) { a.sayWaiting(w, last); last = w })
	switch {
	case err == nil:
		return grant, nil
	case gaveUp.Load():
		return nil, &exitError{code: exitGaveUp, err: fmt.Errorf("gave up waiting for %s after %v (--wait)", catalog.DisplayName, o.wait)}
	case interrupted.Load():
		return nil, exitCode(exitCanceled)
	}
	return nil, err
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

// execute runs the program on the grant's node, with this terminal: its
// output here, and from here its input, its window size, Ctrl+C and the
// other signals, Ctrl+Z.
func (a *app) execute(ctx context.Context, c *client.Conn, grant *hacv1.Grant, prog client.Program, sigs <-chan os.Signal, lease *client.Lease) (client.ExecResult, error) {
	in, isFile := a.stdin.(*os.File)
	// A detached program has no terminal: no one is there to type.
	tty := !grant.Detached && isFile && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))
	if prog.TTY = tty; tty {
		if cols, rows, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
			prog.Window = &hacv1.WindowSize{Rows: uint32(rows), Cols: uint32(cols)}
		}
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	var restore func()
	unraw := func() {
		if restore != nil {
			restore()
			restore = nil
		}
	}
	defer unraw()
	var stdinGate sync.RWMutex // held while the program is suspended (Ctrl+Z)
	return c.Exec(ectx, grant, prog, client.ExecIO{
		Stdout: os.Stdout,
		Stderr: a.stderr,
		Progress: func(u *client.Upload) io.Writer {
			a.say("info", "Establishing links to the resources...")
			return a.progress(u)
		},
		Started: func(ctl *client.Control) {
			a.say("info", "%s is ready to use.", catalog.DisplayName)
			if tty {
				if st, err := term.MakeRaw(int(in.Fd())); err == nil {
					restore = func() { term.Restore(int(in.Fd()), st) }
				}
				go watchWindow(ectx, ctl)
			}
			go pumpStdin(ectx, a.stdin, ctl, &stdinGate)
			if !tty { // on a terminal, Ctrl+Z is a key for the program's own terminal
				go a.suspendOnCtrlZ(ectx, lease, ctl, &stdinGate)
			}
			go a.forwardSignals(ectx, sigs, ctl)
		},
		Exited: func(e *hacv1.Exited) {
			unraw()
			if e.Reason != "" && e.Reason != "the client disconnected" {
				a.say("error", "%s", e.Reason)
			}
		},
		Warn: func(msg string) { a.say("warning", "%s", msg) },
	})
}

// pumpStdin sends this process's input to the program; it waits while
// the program is suspended (gate).
func pumpStdin(ctx context.Context, r io.Reader, ctl *client.Control, gate *sync.RWMutex) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			gate.RLock()
			serr := ctl.Stdin(buf[:n])
			gate.RUnlock()
			if serr != nil {
				return
			}
		}
		if err != nil {
			ctl.CloseStdin()
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
func (a *app) forwardSignals(ctx context.Context, sigs <-chan os.Signal, ctl *client.Control) {
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
			ctl.Signal(a.escalate(sig, &lastInterrupt))
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
func (a *app) suspendOnCtrlZ(ctx context.Context, lease *client.Lease, ctl *client.Control, stdinGate *sync.RWMutex) {
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	defer signal.Stop(stops)
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
		// Stop only once the node has frozen the program: a stopped
		// process sends nothing, not even what it queued.
		if ok, why := ctl.Freeze(true); !ok {
			a.say("warning", "Not suspended: %s.", why)
			ctl.Freeze(false) // if it froze late
			stdinGate.Unlock()
			lease.Suspend(ctx, false)
			continue
		}
		a.say("info", "The program is suspended; fg resumes it (its GPUs stay held meanwhile, for up to %v).", lease.SuspendedFor())
		stopUntilContinued()
		ctl.Freeze(false) // thawed: its answer read, so that the next Ctrl+Z reads its own
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

// escalate turns a second Ctrl+C within killAfterInterrupts of the last
// (at *last) into SIGKILL for the program's whole tree, as srun does, and
// says which it sends; other signals pass as they are.
func (a *app) escalate(sig syscall.Signal, last *time.Time) syscall.Signal {
	if sig != syscall.SIGINT {
		return sig
	}
	if !last.IsZero() && time.Since(*last) < killAfterInterrupts {
		a.say("warning", "Interrupted twice: killing the program and everything it started...")
		sig = syscall.SIGKILL
	} else {
		a.say("info", "Interrupt sent to the program; press Ctrl+C again within %v to kill it.", killAfterInterrupts)
	}
	*last = time.Now()
	return sig
}

func watchWindow(ctx context.Context, ctl *client.Control) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if cols, rows, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
				ctl.Resize(uint16(rows), uint16(cols))
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
