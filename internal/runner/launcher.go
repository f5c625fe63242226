package runner

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Launcher starts jobs. For sandboxed jobs it keeps one sandbox init
// started ahead, its namespaces made, its runtime up and its cgroups
// joined, so that a job's start waits neither for a process to load nor
// for the kernel to move it between cgroups: that is most of what a
// sandbox costs. The zero Launcher starts each init when needed.
type Launcher struct {
	root   string // the cgroup folder warm inits wait in; "" keeps none
	mu     sync.Mutex
	warm   *warmInit
	closed bool
	wg     sync.WaitGroup
	seq    atomic.Int64
	filter deviceFilters
}

// NewLauncher returns a launcher that keeps an init ready in a cgroup
// under root, the CgroupRoot of the jobs it will start.
func NewLauncher(root string) *Launcher {
	l := &Launcher{root: root, filter: deviceFilters{keep: true}}
	l.refill()
	return l
}

// warmInit is a sandbox's init waiting for its configuration, alone in a
// cgroup that becomes its job's. (Cgroup v2 folders cannot be renamed, so
// a sandboxed job's cgroup is named sandbox-AGENTPID-N-RANDOM, not
// Spec.Name; Job.Cgroup says which.)
type warmInit struct {
	cmd    *exec.Cmd
	cg     *cgroup
	sock   *os.File // our end of the configuration socket
	status *os.File // the init's reports
}

// spawnInit starts a sandbox init in new mount, PID, IPC and network
// namespaces (jobnet.go), inside a new cgroup under root (entered at
// clone; the v1 controllers are joined right after). It does nothing
// until it is sent its configuration. An init made ahead runs at nice 19
// until a job takes it, so that loading it (while a job runs or ends)
// takes the processors only when nothing else wants them.
func (l *Launcher) spawnInit(root string, ahead bool) (*warmInit, error) {
	cg, err := newCgroup(root, fmt.Sprintf("sandbox-%d-%d-%x", os.Getpid(), l.seq.Add(1), rand.Uint32()))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSandbox, err)
	}
	if cg.v1 {
		cg.remove()
		return nil, fmt.Errorf("%w: a sandbox needs cgroup v2", ErrSandbox)
	}
	w, err := startInit(cg, ahead)
	if err != nil {
		cg.remove()
		return nil, err
	}
	if err := cg.joinV1(w.cmd.Process.Pid); err != nil {
		w.discard()
		return nil, fmt.Errorf("%w: %v", ErrSandbox, err)
	}
	if err := attachNetwork(w.cmd.Process.Pid); err != nil {
		w.discard()
		return nil, fmt.Errorf("%w: %v", ErrSandbox, err)
	}
	return w, nil
}

func startInit(cg *cgroup, niced bool) (*warmInit, error) {
	dir, err := syscall.Open(cg.dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open cgroup: %v", ErrSandbox, err)
	}
	defer syscall.Close(dir)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "config"), os.NewFile(uintptr(fds[1]), "config")
	defer theirs.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		ours.Close()
		return nil, err
	}
	defer statusW.Close()
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{InitName}, Env: []string{}, Dir: "/",
		ExtraFiles: []*os.File{theirs, statusW},
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:      true,
			Cloneflags:  syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
			UseCgroupFD: true, CgroupFD: dir,
		}}
	start := cmd.Start
	if niced {
		start = func() error { return startNiced(cmd) }
	}
	if err := start(); err != nil {
		ours.Close()
		statusR.Close()
		return nil, fmt.Errorf("%w: start the init: %v", ErrSandbox, err)
	}
	return &warmInit{cmd: cmd, cg: cg, sock: ours, status: statusR}, nil
}

// startNiced starts cmd at nice 19: the child inherits it from the thread
// that forks it, which is set so for the fork only.
func startNiced(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, 19); err != nil { // this thread
		runtime.UnlockOSThread()
		return cmd.Start()
	}
	err := cmd.Start()
	if unix.Setpriority(unix.PRIO_PROCESS, 0, 0) == nil {
		runtime.UnlockOSThread()
	} // else the thread stays locked, and ends with its goroutine
	return err
}

// send sends one message: its length (8 bytes, big-endian, carrying the
// files attached), then its bytes.
func (w *warmInit) send(msg []byte, files ...*os.File) error {
	if len(msg) > maxInitMessage {
		return fmt.Errorf("the job's configuration is %d bytes, more than %d", len(msg), maxInitMessage)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	head := binary.BigEndian.AppendUint64(nil, uint64(len(msg)))
	if err := unix.Sendmsg(int(w.sock.Fd()), head, oob, nil, 0); err != nil {
		return err
	}
	_, err := w.sock.Write(msg)
	return err
}

// discard kills an init that will not be used, and its cgroup.
func (w *warmInit) discard() {
	w.cmd.Process.Kill()
	w.cg.kill()
	w.cmd.Wait()
	w.cg.remove()
	w.sock.Close()
	w.status.Close()
}

// take returns the warm init, or a new one under root, and has the next
// one started.
func (l *Launcher) take(root string) (*warmInit, error) {
	if root != l.root || root == "" {
		return l.spawnInit(root, false)
	}
	l.mu.Lock()
	w := l.warm
	l.warm = nil
	l.mu.Unlock()
	if w != nil {
		// It waited at the lowest priority; its job runs at the normal one.
		// Every thread of the init (its own process group) is reset, and
		// the program is forked from one of them.
		if err := unix.Setpriority(unix.PRIO_PGRP, w.cmd.Process.Pid, 0); err == nil {
			return w, nil
		}
		w.discard() // it died while it waited: start another
	}
	return l.spawnInit(root, false)
}

// refill starts an init in the background for the next job.
func (l *Launcher) refill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.root == "" {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		w, err := l.spawnInit(l.root, true)
		if err != nil {
			return // the next job starts one itself, and says why it failed
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.closed || l.warm != nil {
			w.discard()
			return
		}
		l.warm = w
	}()
}

// Close stops the warm init; jobs already started are not touched.
func (l *Launcher) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.warm != nil {
		l.warm.discard()
		l.warm = nil
	}
	l.filter.close()
}

// Start starts a job: in a sandbox when the spec has one, else plainly.
func (l *Launcher) Start(s Spec) (*Job, error) {
	if s.Sandbox == nil {
		return Start(s)
	}
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return nil, fmt.Errorf("runner: empty command: %w", ErrNotFound)
	}
	if err := s.Sandbox.validate(s.Dir); err != nil {
		return nil, err
	}
	w, err := l.take(s.CgroupRoot)
	if err != nil {
		return nil, err
	}
	// The next job's init starts once this one's program runs, so that
	// the two do not compete for the processor.
	defer l.refill()
	if err := w.cg.limit(s.Sandbox.Limits, s.Sandbox.Devices, &l.filter, w.cmd.Process.Pid); err != nil {
		w.discard()
		return nil, fmt.Errorf("%w: %v", ErrSandbox, err)
	}
	j := &Job{cg: w.cg, isolation: "sandbox"}
	if err := j.startSandboxed(s, w); err != nil {
		if !j.reaped.Load() {
			w.cmd.Process.Kill()
			w.cg.kill()
			w.cmd.Wait()
		}
		for _, c := range j.closers {
			c.Close()
		}
		if j.stdin != nil {
			j.stdin.Close()
		}
		if j.ptmx != nil {
			j.ptmx.Close()
		}
		w.cg.remove()
		return nil, err
	}
	return j, nil
}
