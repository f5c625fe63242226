package runner

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
)

// Spec describes one program to run.
type Spec struct {
	// Name names the job's cgroup; unique on the node.
	Name string
	Argv []string
	Env  []string
	Dir  string
	// TTY runs the program on a pseudo-terminal of Rows x Cols.
	TTY        bool
	Rows, Cols uint16
	// CgroupRoot is the cgroup v2 directory for job cgroups ("" for none).
	CgroupRoot string
	// Stdout and Stderr receive the output; with a TTY all of it goes to
	// Stdout.
	Stdout, Stderr io.Writer
	// Sandbox, when set, isolates the program (SPEC P8); Dir is then a
	// path inside it. It needs root and cgroup v2.
	Sandbox *Sandbox
}

// Exit is how a program ended.
type Exit struct {
	Code   int // the exit code, or 128+signal when killed by a signal
	Signal syscall.Signal
}

var (
	// ErrNotFound means the command is not on the node (exit 127).
	ErrNotFound = errors.New("command not found")
	// ErrNotExecutable means the command cannot be run (exit 126).
	ErrNotExecutable = errors.New("permission denied")
)

// Job is a started program.
type Job struct {
	cmd       *exec.Cmd
	cg        *cgroup
	stdin     io.WriteCloser
	ptmx      *os.File
	copies    sync.WaitGroup
	isolation string
	closers   []io.Closer
	sandbox   *sandboxed
	// reaped is set once Wait has reaped the program: its pid, and its
	// process group's, may then belong to someone else.
	reaped atomic.Bool
	// release ends with the job's cleanup, after Wait for a sandboxed job
	// (Released).
	release    sync.WaitGroup
	releaseErr error
}

// LookPath finds name the way a shell would, with the given PATH value and
// working directory.
func LookPath(name, path, dir string) (string, error) {
	check := func(p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			return ErrNotFound
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return ErrNotExecutable
		}
		return nil
	}
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return p, check(p)
	}
	err := ErrNotFound
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, name)
		switch e := check(p); e {
		case nil:
			return p, nil
		case ErrNotExecutable:
			err = e
		}
	}
	return "", err
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// Start starts the program. A command that cannot be found or run returns
// ErrNotFound or ErrNotExecutable.
func Start(s Spec) (*Job, error) {
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return nil, fmt.Errorf("runner: empty command: %w", ErrNotFound)
	}
	if s.Sandbox != nil {
		return new(Launcher).Start(s) // no warm init kept
	}
	path, err := LookPath(s.Argv[0], envValue(s.Env, "PATH"), s.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Argv[0], err)
	}
	j := &Job{isolation: "process group"}
	cmd := &exec.Cmd{Path: path, Args: s.Argv, Env: s.Env, Dir: s.Dir}
	attr := &syscall.SysProcAttr{Setsid: true}
	if cg, err := newCgroup(s.CgroupRoot, s.Name); err == nil {
		j.cg = cg
		j.isolation = "cgroup v1 freezer"
		if !cg.v1 {
			fd, err := syscall.Open(cg.dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				cg.remove()
				return nil, fmt.Errorf("runner: open cgroup: %w", err)
			}
			defer syscall.Close(fd)
			attr.UseCgroupFD, attr.CgroupFD = true, fd
			j.isolation = "cgroup v2"
		}
	}
	if j.cg != nil && j.cg.v1 {
		// A v1 cgroup cannot be entered at clone: the program enters it
		// itself through a shell trampoline before exec, so that nothing it
		// forks can start outside.
		cmd.Path = "/bin/sh"
		cmd.Args = append([]string{"sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(j.cg.dir, "cgroup.procs"), path}, s.Argv[1:]...)
	}
	cmd.SysProcAttr = attr
	j.cmd = cmd
	if s.TTY {
		err = j.startTTY(s)
	} else {
		err = j.startPipes(s)
	}
	if err != nil {
		if j.cg != nil {
			j.cg.remove()
		}
		return nil, fmt.Errorf("runner: start %s: %w", s.Argv[0], err)
	}
	return j, nil
}

func (j *Job) startTTY(s Spec) error {
	attr := j.cmd.SysProcAttr
	attr.Setctty = true
	ptmx, err := pty.StartWithAttrs(j.cmd, &pty.Winsize{Rows: s.Rows, Cols: s.Cols}, attr)
	if err != nil {
		return err
	}
	j.ptmx, j.stdin = ptmx, ptmx
	j.copies.Add(1)
	go func() {
		defer j.copies.Done()
		io.Copy(s.Stdout, ptmx) // ends with EIO once the terminal's last holder exits
	}()
	return nil
}

func (j *Job) startPipes(s Spec) error {
	theirs, err := j.pipes(s)
	if err != nil {
		return err
	}
	j.cmd.Stdin, j.cmd.Stdout, j.cmd.Stderr = theirs[0], theirs[1], theirs[2]
	err = j.cmd.Start()
	// The child has its copies; ours must close so that EOF arrives.
	for _, f := range theirs {
		f.Close()
	}
	if err != nil {
		j.stdin.Close()
		for _, c := range j.closers {
			c.Close()
		}
	}
	return err
}

// Pid returns the program's process id on the node.
func (j *Job) Pid() int {
	if j.sandbox != nil && j.sandbox.hostPid != 0 {
		return j.sandbox.hostPid
	}
	return j.cmd.Process.Pid
}

// Pids lists the job's processes: every member of its cgroup, or the main
// process without one.
func (j *Job) Pids() []int {
	if j.cg != nil {
		return j.cg.pids()
	}
	return []int{j.cmd.Process.Pid}
}

// Cgroup is the job's cgroup v2 folder, or "" without one.
func (j *Job) Cgroup() string {
	if j.cg == nil {
		return ""
	}
	return j.cg.dir
}

// Isolation says how the job's process tree is contained.
func (j *Job) Isolation() string { return j.isolation }

// Stdin is the program's input.
func (j *Job) Stdin() io.WriteCloser { return j.stdin }

// Resize changes the terminal size (TTY jobs only).
func (j *Job) Resize(rows, cols uint16) error {
	if j.ptmx == nil {
		return nil
	}
	return pty.Setsize(j.ptmx, &pty.Winsize{Rows: rows, Cols: cols})
}

// Signal sends sig to the program's process group; after the program was
// reaped it does nothing.
func (j *Job) Signal(sig syscall.Signal) error {
	if j.reaped.Load() {
		return nil
	}
	if j.sandbox != nil {
		return syscall.Kill(j.cmd.Process.Pid, sig) // the init forwards it
	}
	return syscall.Kill(-j.cmd.Process.Pid, sig)
}

// SignalAll sends sig to every process of the job, once each (hac
// cancel's SIGTERM: as scancel does, also to those that left the
// program's process group); without a cgroup, to the process group.
func (j *Job) SignalAll(sig syscall.Signal) error {
	if j.reaped.Load() {
		return nil
	}
	if j.cg == nil {
		return j.Signal(sig)
	}
	// Frozen meanwhile, none of its processes can exit and have its pid
	// taken by another's before the signal lands. (A program suspended
	// with Ctrl+Z is thawed too: it is being stopped.)
	frozen := j.cg.freeze(true) == nil
	for _, pid := range j.cg.pids() {
		if j.sandbox != nil && pid == j.cmd.Process.Pid {
			continue // the sandbox's init, which would pass it on again
		}
		syscall.Kill(pid, sig)
	}
	if frozen {
		return j.cg.freeze(false)
	}
	return nil
}

// Suspend freezes (or thaws) the whole process tree, as Ctrl+Z and fg do
// for a local program: through its cgroup's freezer, or SIGSTOP and
// SIGCONT to its process group without one.
func (j *Job) Suspend(frozen bool) error {
	if j.reaped.Load() {
		return errors.New("runner: the program has ended")
	}
	if j.cg != nil {
		return j.cg.freeze(frozen)
	}
	sig := syscall.SIGCONT
	if frozen {
		sig = syscall.SIGSTOP
	}
	return syscall.Kill(-j.cmd.Process.Pid, sig)
}

// Kill kills the whole process tree; after Wait it does nothing.
func (j *Job) Kill() error {
	if j.reaped.Load() {
		return nil
	}
	return j.killTree()
}

func (j *Job) killTree() error {
	if j.cg != nil {
		return j.cg.kill()
	}
	return syscall.Kill(-j.cmd.Process.Pid, syscall.SIGKILL)
}

// Wait waits until the program ended and no process of its job is left,
// drains the output, and returns how the program ended; an error means
// that some of the job's processes could not be killed. A sandboxed job's
// init reports the end once it has killed and reaped the rest of its
// namespace; the kernel's teardown of the namespaces after that (a few
// milliseconds) and the removal of the job's cgroups go on after Wait
// returns, and Released waits for them.
func (j *Job) Wait() (Exit, error) {
	j.release.Add(1)
	if j.sandbox != nil {
		if r, err := j.sandbox.next(); err == nil && r.kind == "exit" {
			j.reaped.Store(true)
			j.drain()
			go func() {
				defer j.release.Done()
				j.cmd.Process.Wait()
				j.releaseErr = j.removeCgroup(j.killTree())
			}()
			return Exit{Code: r.code, Signal: syscall.Signal(r.signal)}, nil
		}
		// The init was killed (the job was stopped) or failed: its wait
		// status says how, and the kernel killed the rest.
	}
	defer j.release.Done()
	state, err := j.cmd.Process.Wait()
	if err != nil {
		return Exit{}, err
	}
	ws := state.Sys().(syscall.WaitStatus)
	// Kill what is left of the tree. Without a cgroup that is the process
	// group, whose id stays reserved while any member lives.
	killErr := j.killTree()
	j.reaped.Store(true)
	j.drain()
	j.releaseErr = j.removeCgroup(nil)
	if ws.Signaled() {
		return Exit{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}, killErr
	}
	return Exit{Code: ws.ExitStatus()}, killErr
}

// drain waits for the output copies (at most 5 s: something outside the
// job may hold its output open) and closes the job's ends.
func (j *Job) drain() {
	drained := make(chan struct{})
	go func() { j.copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
	}
	if j.ptmx != nil {
		j.ptmx.Close()
	} else {
		j.stdin.Close()
	}
	for _, c := range j.closers {
		c.Close()
	}
}

// removeCgroup removes the job's cgroups; it returns killErr (the job's
// processes could not all be killed), else why they could not be removed.
func (j *Job) removeCgroup(killErr error) error {
	if j.cg == nil {
		return killErr
	}
	if err := j.cg.remove(); killErr == nil {
		return err
	}
	return killErr
}

// Released waits, after Wait, until the job's cgroups are removed, and
// says why they could not be.
func (j *Job) Released() error {
	j.release.Wait()
	return j.releaseErr
}
