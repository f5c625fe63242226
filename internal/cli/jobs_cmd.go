package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
)

// Commands on one job after it started (SPEC A11): hac logs, attach,
// fetch and cancel.

// startedDetached tells how to reach a detached job that just started,
// and prints its id on stdout (for scripts: job=$(hac run -d ...)).
func (a *app) startedDetached(jobID, node string) {
	a.say("info", "Job %s runs detached on node %s. Follow its output with hac logs -f %s, reconnect with hac attach %s, bring its files back here with hac fetch %s, stop it with hac cancel %s.",
		jobID, node, jobID, jobID, jobID, jobID)
	fmt.Fprintln(a.stdout, jobID)
}

func (a *app) output() client.Output {
	return client.Output{Stdout: a.stdout, Stderr: a.stderr, Dropped: func(n int64) {
		a.say("info", "The node keeps the last part of the job's output: its first %s are gone.", bytesIn(n))
	}, Skipped: func(n int64) {
		a.say("warning", "%s of the job's output went by unread here: the node keeps only its last part, and this connection fell behind.", bytesIn(n))
	}}
}

func (a *app) logsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] JOB",
		Short: "Show the output of a job, attached or detached (hac run -d)",
		Long: `Show what a job's program wrote, stdout to stdout and stderr to stderr,
as its node kept it: the last part (64 MiB unless the node's operator
chose otherwise), for a while after the job ended (a day unless chosen
otherwise). With -f, follow the output until the program ends.`,
		Example: `  hac logs 42
  hac logs -f 42 | grep loss`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			_, err = c.Logs(cmd.Context(), args[0], follow, a.output())
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output until the program ends")
	return cmd
}

func (a *app) attachCmd() *cobra.Command {
	var noStdin bool
	cmd := &cobra.Command{
		Use:   "attach JOB",
		Short: "Reconnect to a running job: its output, its input, and Ctrl+C for its program",
		Long: `Follow a running job's output, as hac logs -f does, and pass
Ctrl+C (SIGINT; a second one within 2 s kills the program's whole tree)
and Ctrl+\ (SIGQUIT) to its program. For a job started with hac run -d -i,
what you type goes to the program's standard input, and Ctrl+D (the end of
this input) ends it; so does a pipe or a file given as input. A terminal
this is not in the foreground of (hac attach JOB &) and other devices
(/dev/null under cron or systemd) are not read; --no-stdin keeps any input
here. Closing the
terminal, or SIGTERM, leaves without stopping the job. When the program
ends, hac attach exits with its exit code.`,
		Example: `  hac attach 42
  job=$(hac run -d -i -- python3 repl.py); hac attach $job
  hac attach --no-stdin 42 < /dev/null`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var stdin io.Reader
			if !noStdin && passInput(a.stdin) {
				stdin = a.stdin
			}
			return a.attach(cmd.Context(), c, args[0], stdin)
		},
	}
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "do not pass this input to the program")
	return cmd
}

func (a *app) attach(ctx context.Context, c *client.Conn, jobID string, stdin io.Reader) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	actx, detach := context.WithCancel(ctx)
	defer detach()
	toJob := make(chan syscall.Signal, 4)
	go func() {
		var lastInterrupt time.Time
		for {
			select {
			case <-actx.Done():
				return
			case s := <-sigs:
				switch sig := s.(syscall.Signal); sig {
				case syscall.SIGTERM, syscall.SIGHUP:
					detach()
					return
				default:
					toJob <- a.escalate(sig, &lastInterrupt)
				}
			}
		}
	}()
	exit, err := c.Attach(actx, jobID, client.AttachIO{Signals: toJob, Stdin: stdin, Attached: func(input bool) {
		if input {
			a.say("info", "Attached to job %s: what you type goes to its program (Ctrl+D ends its input), Ctrl+C interrupts it; closing this terminal leaves it running.", jobID)
		} else {
			a.say("info", "Attached to job %s: Ctrl+C interrupts its program; closing this terminal leaves it running.", jobID)
		}
	}}, a.output())
	if err != nil {
		return err
	}
	if exit == nil {
		a.say("info", "Detached from job %s; it runs on.", jobID)
		return nil
	}
	a.sayEnd(jobID, exit)
	return exitCode(int(exit.ExitCode))
}

// passInput reports whether hac attach passes its input on: a terminal it
// is in the foreground of, a pipe, a file or a socket someone gave it; not
// a terminal it is in the background of (reading would stop it) nor
// another device (/dev/null under cron or systemd, whose end would end
// the program's input at once).
func passInput(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return r != nil
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	switch m := fi.Mode(); {
	case m&os.ModeCharDevice != 0:
		return term.IsTerminal(int(f.Fd())) && inTerminalForeground()
	case m&(os.ModeNamedPipe|os.ModeSocket) != 0, m.IsRegular():
		return true
	}
	return false
}

// sayEnd tells how a detached job ended and where its files are.
func (a *app) sayEnd(jobID string, e *hacv1.Exited) {
	why := ""
	if e.Reason != "" {
		why = ": " + e.Reason
	}
	a.say("info", "Job %s ended with exit code %d%s. hac fetch %s brings its files back.", jobID, e.ExitCode, why, jobID)
}

func (a *app) fetchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fetch JOB [DIR]",
		Short: "Bring back the files a detached job created or changed",
		Long: `Bring the files a detached job's program created or changed into the
folder it was started from (this machine remembers it), or into DIR.
As after hac run, a file changed here since the job started (or since
the last fetch) is not overwritten: the job's version lands beside it as
NAME.hac-jobJOB. A running job's files come as they are now.`,
		Example: `  hac fetch 42
  hac fetch 42 ~/results`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.fetch(cmd.Context(), c, args)
		},
	}
}

func (a *app) fetch(ctx context.Context, c *client.Conn, args []string) error {
	jobID := args[0]
	rec, err := client.LoadRecord(c.Addr, jobID)
	if err != nil && !errors.Is(err, client.ErrNoRecord) {
		return err
	}
	var dir string
	switch {
	case len(args) == 2:
		if dir, err = filepath.Abs(args[1]); err != nil {
			return err
		}
		if rec != nil && rec.Dir != dir {
			rec = nil // what it knows is of another folder
		}
	case rec != nil:
		dir = rec.Dir
	default:
		return usageError{fmt.Errorf("this machine has no record of job %s (it was started elsewhere, or its record is gone): name the folder, as in hac fetch %s DIR", jobID, jobID)}
	}
	got, err := c.Fetch(ctx, jobID, dir, rec)
	for _, w := range got.Warnings {
		a.say("warning", "%s", w)
	}
	if rec != nil && got.Files > 0 {
		if serr := rec.Save(); serr != nil {
			a.say("warning", "Could not update the record of job %s (%v): a next fetch may write files beside their copies.", jobID, serr)
		}
	}
	if err != nil {
		return err
	}
	a.say("info", "%d files of job %s written into %s.", got.Files, jobID, dir)
	return nil
}

func (a *app) cancelCmd() *cobra.Command {
	var grace time.Duration
	var noWait bool
	cmd := &cobra.Command{
		Use:   "cancel JOB [JOB...]",
		Short: "Stop jobs: withdraw waiting ones, end running ones (SIGTERM, then SIGKILL)",
		Long: `Stop jobs of yours (any, as an admin). A waiting job leaves the queue; each
process of a running one gets SIGTERM, and once the grace period has
passed, its whole tree SIGKILL, as scancel does. hac cancel waits until
each job has ended, unless --no-wait.`,
		Example: `  hac cancel 42
  hac cancel --grace 2m 42 43`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if grace < 0 || grace > time.Hour {
				return usageError{fmt.Errorf("--grace %v: give 0s to 1h", grace)}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var g *time.Duration
			if cmd.Flags().Changed("grace") {
				g = &grace
			}
			var failed error
			for _, id := range args {
				if err := a.cancel(cmd.Context(), c, id, g, noWait); err != nil {
					fmt.Fprintf(a.stderr, "hac: job %s: %s\n", id, userMessage(err))
					failed = &exitError{code: 1, quiet: true}
				}
			}
			return failed
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 10*time.Second, "time between SIGTERM and SIGKILL, 0s to 1h")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once asked, without waiting for the end")
	return cmd
}

func (a *app) cancel(ctx context.Context, c *client.Conn, jobID string, grace *time.Duration, noWait bool) error {
	j, err := c.Stop(ctx, jobID, grace)
	if err != nil {
		return err
	}
	if client.Ended(j) {
		a.say("info", "Job %s was withdrawn from the queue.", jobID)
		return nil
	}
	g := 10 * time.Second
	if grace != nil {
		g = *grace
	}
	a.say("info", "Job %s was sent SIGTERM; it is killed if it still runs in %v.", jobID, g)
	if noWait {
		return nil
	}
	// The node hears of it with its next heartbeat; the control plane ends
	// the job itself if its node stays silent past the grace.
	wctx, cancel := context.WithTimeout(ctx, g+time.Minute)
	defer cancel()
	j, err = c.WaitEnded(wctx, jobID)
	if err != nil {
		return fmt.Errorf("not ended yet: %v (see hac jobs)", userMessage(err))
	}
	a.say("info", "Job %s ended: %s%s.", jobID, j.State, exitOf(j))
	return nil
}

func exitOf(j *hacv1.Job) string {
	if j.HasExitCode {
		return fmt.Sprintf(", exit code %d", j.ExitCode)
	}
	return ""
}

// bytesIn says a size in words: 12.3 MiB.
func bytesIn(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func (a *app) jobCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Show one job"}
	var format string
	show := &cobra.Command{
		Use:   "show JOB",
		Short: "Show one job whole: its state, times, GPUs, node, end",
		Example: `  hac job show 42
  hac job show 42 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.CheckFormat(format); err != nil {
				return usageError{err}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			j, err := c.GetJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return output.WriteDetail(a.stdout, format, jobDetail(j, time.Now()), j)
		},
	}
	show.Flags().StringVarP(&format, "output", "o", "table", "table, json or yaml")
	cmd.AddCommand(show)
	return cmd
}

// jobDetail is hac job show's text.
func jobDetail(j *hacv1.Job, now time.Time) output.Detail {
	d := output.Detail{
		{"Job", j.Id}, {"Server", j.User + "/" + j.Server}, {"Command", j.Command}, {"State", j.State},
		{"Mode", mode(j)}, {"Model", fmt.Sprintf("%s (%s)", j.Model, mib(j.MemoryMib))}, {"Priority", fmt.Sprint(j.Priority)},
		{"Submitted", when(j.SubmittedAt)}, {"Waited", waited(j, now)}, {"Started", when(j.AllocatedAt)}, {"Ran", heldFor(j, now)},
		{"Ended", when(j.EndedAt)}, {"Exit code", exitCell(j)},
	}
	if j.EndReason != "" {
		d = append(d, [2]string{"End reason", j.EndReason})
	}
	if j.StoppingSince != nil && !client.Ended(j) {
		d = append(d, [2]string{"Stopping since", when(j.StoppingSince)})
	}
	if j.WaitReason != "" {
		d = append(d, [2]string{"Waiting for", queueReason(j)})
	}
	for i, p := range j.Placements {
		d = append(d, [2]string{fmt.Sprintf("GPU %d", i), fmt.Sprintf("%s on %s, %s", p.GpuUuid, p.Node, mib(p.MemoryMib))})
	}
	if client.Running(j) {
		d = append(d, [2]string{"Program pid", fmt.Sprintf("%d on %s", j.Pid, firstNode(j))}, [2]string{"GPU memory used", mib(j.UsedMib)})
	}
	return d
}
