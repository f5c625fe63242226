package runner

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hac-project/hac/internal/idmap"
)

// Sandbox describes the isolated world a job's program runs in (SPEC P8).
// The program runs as UID:GID with no capabilities and no_new_privs, in its
// own mount, PID, IPC and cgroup namespaces, sees only the paths named
// here, and may open only the device nodes marked Allow.
type Sandbox struct {
	UID, GID int
	// Root is an empty host folder, private to the job, on which the job's
	// root file system is assembled.
	Root string
	// OS, when set, is the job's root file system: its server's image
	// under the server's changes (SPEC A7). Else the root is an empty
	// read-only one with Runtime shown in it.
	OS *Overlay
	// Runtime lists host paths shown read-only at the same place (the
	// node's runtime: /usr, /etc ...; with an OS, what the node lends it,
	// such as the GPU driver's libraries). Paths the host lacks are
	// skipped; without an OS, symlinks (/bin -> usr/bin) are copied as
	// symlinks.
	Runtime []string
	// Binds are writable host folders shown inside, mounted in order.
	Binds []Bind
	// Masked paths are hidden under an empty read-only folder or file.
	Masked []string
	// Devices are made in the job's /dev beside the standard ones (null,
	// zero, full, random, urandom, tty, ptmx); only those with Allow may be
	// opened, which the device cgroup enforces.
	Devices []Device
	// Files are small read-only files shown at their path (such as an
	// /etc/passwd that names the job's user).
	Files []File
	Limits
}

// Overlay is a job's root made of read-only folders, the job's writes
// going to its own Upper (discarded with the job).
type Overlay struct {
	// Lower are the folders, top first.
	Lower []Layer
	// Upper and Work are empty folders of one file system (Work is
	// overlayfs's own); Stage is an empty folder where the init attaches
	// the idmapped views of Lower.
	Upper, Work, Stage string
	// Volatile: Upper's writes need not last past the job (it is
	// discarded, or what matters of it is sent back while the job
	// runs): overlayfs then skips its syncs, fsync(2) included, and does
	// not sync Upper's whole file system when the job's namespace goes.
	Volatile bool
}

// Layer is a read-only folder of an Overlay, its owners and groups mapped
// as UIDs and GIDs say (none: as on disk).
type Layer struct {
	Dir        string
	UIDs, GIDs []idmap.Map
}

// Limits bounds a job's resources; zero means no limit.
type Limits struct {
	MemoryBytes int64
	Pids        int64
}

// Bind shows the host folder Source at Target inside the sandbox. With
// Lower it is an overlay instead: Lower's read-only folders under Source,
// which takes the job's writes (a job's workspace over the node's shared
// copy of its files); Work, Stage and Volatile are then as an Overlay's.
type Bind struct {
	Source, Target string
	Lower          []Layer
	Work, Stage    string
	Volatile       bool
}

// Device is a character device node.
type Device struct {
	// Path is relative to /dev, such as "nvidia0".
	Path         string
	Major, Minor uint32
	Allow        bool
}

// File is a read-only file shown at Path.
type File struct {
	Path    string
	Content string
}

// InitName is the argv[0] under which the hac binary runs as a sandbox's
// first process; cli.Main hands such a process to Init.
const InitName = "hac-sandbox-init"

// standardDevices are made in every sandbox's /dev and may be opened.
var standardDevices = []Device{
	{Path: "null", Major: 1, Minor: 3, Allow: true},
	{Path: "zero", Major: 1, Minor: 5, Allow: true},
	{Path: "full", Major: 1, Minor: 7, Allow: true},
	{Path: "random", Major: 1, Minor: 8, Allow: true},
	{Path: "urandom", Major: 1, Minor: 9, Allow: true},
	{Path: "tty", Major: 5, Minor: 0, Allow: true},
}

// initConfig is what the agent tells a sandbox's init, as JSON on fd 3.
type initConfig struct {
	Argv []string
	Env  []string
	Dir  string
	TTY  bool
	Sandbox
}

// Files the agent passes to the init: fd 3 is a stream socket for the
// configuration (one message, with the program's stdio attached when it
// has no terminal) and the terminal's number (warmInit.send, receive);
// fd 4 is a pipe for the init's reports (started, error, exit).
const (
	initConfigFD = 3
	initStatusFD = 4
)

// ownPaths are what the init makes in every sandbox; no bind may go on,
// under or over them.
var ownPaths = []string{"/.hac", "/.old", "/proc", "/sys", "/dev"}

// validate checks a sandbox before anything is mounted.
func (s *Sandbox) validate(dir string) error {
	if s.UID <= 0 || s.GID <= 0 {
		return errors.New("runner: a sandbox needs a non-root uid and gid")
	}
	if !filepath.IsAbs(s.Root) {
		return errors.New("runner: the sandbox root must be an absolute path")
	}
	for _, t := range append([]string{dir}, bindTargets(s.Binds)...) {
		if !filepath.IsAbs(t) || filepath.Clean(t) != t || t == "/" {
			return fmt.Errorf("runner: sandbox path %q is not absolute and clean", t)
		}
	}
	// Binds may not cover what the init builds itself.
	for _, t := range bindTargets(s.Binds) {
		for _, own := range ownPaths {
			if t == own || strings.HasPrefix(t, own+"/") || strings.HasPrefix(own, t+"/") {
				return fmt.Errorf("runner: a bind on %s would cover the sandbox's own %s", t, own)
			}
		}
	}
	if o := s.OS; o != nil {
		if len(o.Lower) == 0 {
			return errors.New("runner: a sandbox's OS needs a lower folder")
		}
		if err := o.validate(); err != nil {
			return err
		}
	}
	for _, b := range s.Binds {
		if len(b.Lower) > 0 {
			if err := b.overlay().validate(); err != nil {
				return err
			}
		}
	}
	for _, d := range s.Devices {
		if d.Path == "" || filepath.IsAbs(d.Path) || filepath.Clean(d.Path) != d.Path || strings.HasPrefix(d.Path, "..") {
			return fmt.Errorf("runner: bad device path %q", d.Path)
		}
	}
	return nil
}

// overlay is an overlay Bind's folders.
func (b Bind) overlay() *Overlay {
	return &Overlay{Lower: b.Lower, Upper: b.Source, Work: b.Work, Stage: b.Stage, Volatile: b.Volatile}
}

// validate checks that the folders can be named in overlayfs's options.
func (o *Overlay) validate() error {
	for _, p := range append([]string{o.Upper, o.Work, o.Stage}, layerDirs(o.Lower)...) {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, ",:\\") {
			return fmt.Errorf("runner: overlay folder %q must be absolute, without , : or \\", p)
		}
	}
	return nil
}

func layerDirs(ls []Layer) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Dir
	}
	return out
}

func bindTargets(bs []Bind) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Target
	}
	return out
}

// sandboxed is the agent's side of a running sandbox: the init's reports.
type sandboxed struct {
	status *os.File
	lines  *bufio.Scanner
	// hostPid is the program's pid on the node (the init's is cmd's).
	hostPid int
}

// report is one line the init writes on its status pipe:
//
//	started PID        the program runs, PID in the job's namespace
//	error CODE MSG     the program could not start (127, 126, 1)
//	exit CODE SIGNAL   the program ended
type report struct {
	kind   string
	code   int
	signal int
	msg    string
}

func (s *sandboxed) next() (report, error) {
	if !s.lines.Scan() {
		if err := s.lines.Err(); err != nil {
			return report{}, err
		}
		return report{}, errors.New("runner: the sandbox ended without a report")
	}
	f := strings.SplitN(s.lines.Text(), " ", 3)
	r := report{kind: f[0]}
	if len(f) > 1 {
		r.code, _ = strconv.Atoi(f[1])
	}
	if len(f) > 2 {
		switch r.kind {
		case "exit":
			r.signal, _ = strconv.Atoi(f[2])
		default:
			r.msg = f[2]
		}
	}
	return r, nil
}

// startSandboxed runs the program through w, a sandbox's init already in
// the job's cgroups: it hands the init its configuration (and, without a
// terminal, the program's stdio) and waits until the program runs or
// could not be started.
func (j *Job) startSandboxed(s Spec, w *warmInit) error {
	j.cmd = w.cmd
	j.sandbox = &sandboxed{status: w.status, lines: bufio.NewScanner(w.status)}
	j.closers = append(j.closers, w.status, w.sock)
	var stdio []*os.File
	if !s.TTY {
		var err error
		if stdio, err = j.pipes(s); err != nil {
			return fmt.Errorf("%w: %v", ErrSandbox, err)
		}
	}
	cfg, err := json.Marshal(initConfig{Argv: s.Argv, Env: s.Env, Dir: s.Dir, TTY: s.TTY, Sandbox: *s.Sandbox})
	if err != nil {
		return err
	}
	err = w.send(cfg, stdio...)
	for _, f := range stdio {
		f.Close() // the init has its copies; ours must close so that EOF arrives
	}
	if err != nil {
		return fmt.Errorf("%w: configure: %v", ErrSandbox, err)
	}
	r, err := j.sandbox.next()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSandbox, err)
	}
	if r.kind == "tty-ready" {
		if err := j.openSandboxTerminal(s, w); err != nil {
			return fmt.Errorf("%w: %v", ErrSandbox, err)
		}
		if r, err = j.sandbox.next(); err != nil {
			return fmt.Errorf("%w: %v", ErrSandbox, err)
		}
	}
	switch r.kind {
	case "started":
		j.sandbox.hostPid = hostPid(j.cg.pids(), r.code)
		return nil
	case "error":
		j.cmd.Process.Wait()
		j.reaped.Store(true)
		var kind error
		switch r.code {
		case 127:
			kind = ErrNotFound
		case 126:
			kind = ErrNotExecutable
		default:
			kind = ErrSandbox
		}
		return &startError{msg: r.msg, kind: kind}
	}
	return fmt.Errorf("runner: unexpected sandbox report %q", r.kind)
}

// pipes makes the program's stdin, stdout and stderr pipes: it keeps its
// ends, starts copying, and returns the program's ends.
func (j *Job) pipes(s Spec) ([]*os.File, error) {
	var theirs, ours []*os.File
	for i := 0; i < 3; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range append(theirs, ours...) {
				f.Close()
			}
			return nil, err
		}
		if i == 0 {
			theirs, ours = append(theirs, r), append(ours, w)
		} else {
			theirs, ours = append(theirs, w), append(ours, r)
		}
	}
	j.stdin = ours[0]
	j.closers = append(j.closers, ours[1], ours[2])
	for i, w := range []io.Writer{s.Stdout, s.Stderr} {
		r := ours[i+1]
		widenPipe(r)
		j.copies.Add(1)
		go func() {
			defer j.copies.Done()
			// A read takes what the pipe holds, up to the buffer: small
			// writes still go at once, a fast writer's in large messages.
			io.CopyBuffer(onlyWriter{w}, onlyReader{r}, make([]byte, outputBuffer))
		}()
	}
	return theirs, nil
}

// outputBuffer is the most of a program's stdout or stderr read at once,
// and so the most one output message carries: in 32 KiB messages
// (io.Copy's) a stream moves 28% less than in 256 KiB ones, which move
// within a few percent of 4 MiB ones (internal/agent BenchmarkOutputStream,
// message=...).
const outputBuffer = 256 << 10

// widenPipe lets a pipe hold 1 MiB (the default unprivileged bound,
// fs.pipe-max-size) instead of 64 KiB, so that a program writing fast
// fills large reads while its output is being sent; an error leaves it
// as it was.
func widenPipe(f *os.File) {
	if c, err := f.SyscallConn(); err == nil {
		c.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
	}
}

// onlyReader and onlyWriter hide io.ReaderFrom and io.WriterTo, so that
// io.CopyBuffer uses its buffer (os.File's WriteTo would copy through 32
// KiB of its own).
type onlyReader struct{ io.Reader }

type onlyWriter struct{ io.Writer }

// ttyMessage tells a sandbox's init which terminal of its own devpts the
// program gets.
type ttyMessage struct{ PTY int }

// openSandboxTerminal opens a pseudo-terminal in the sandbox's own devpts
// (so that the program's terminal has a name inside it, as ttyname and
// tty expect), keeps its master and tells the init the slave's number.
func (j *Job) openSandboxTerminal(s Spec, w *warmInit) error {
	ptmx, err := os.OpenFile(fmt.Sprintf("/proc/%d/root/dev/pts/ptmx", j.cmd.Process.Pid), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("runner: the sandbox's terminal: %w", err)
	}
	n, err := unlockPTY(ptmx)
	if err != nil {
		ptmx.Close()
		return err
	}
	j.ptmx, j.stdin = ptmx, ptmx
	j.Resize(s.Rows, s.Cols)
	msg, _ := json.Marshal(ttyMessage{PTY: n})
	if err := w.send(msg); err != nil {
		return fmt.Errorf("runner: the sandbox's terminal: %w", err)
	}
	j.copies.Add(1)
	go func() {
		defer j.copies.Done()
		io.Copy(s.Stdout, ptmx) // ends with EIO once the terminal's last holder exits
	}()
	return nil
}

// unlockPTY unlocks a pseudo-terminal master and returns its number.
func unlockPTY(ptmx *os.File) (int, error) {
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return 0, fmt.Errorf("runner: unlock the terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		return 0, fmt.Errorf("runner: the terminal's number: %w", err)
	}
	return n, nil
}

// ErrSandbox means the job's sandbox could not be built.
var ErrSandbox = errors.New("the job's sandbox could not be built")

// startError is a program that could not start; its message is the
// init's, its kind one of ErrNotFound, ErrNotExecutable, ErrSandbox.
type startError struct {
	msg  string
	kind error
}

func (e *startError) Error() string { return e.msg }
func (e *startError) Unwrap() error { return e.kind }

// jobPid is a node process's pid in the job's PID namespace (the second
// level of its NSpid line: the node's, then the job's).
func jobPid(p int) (int, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			if f := strings.Fields(v); len(f) > 1 {
				n, err := strconv.Atoi(f[1])
				return n, err == nil
			}
		}
	}
	return 0, false
}

// hostPid finds, among pids, the process whose pid in the job's namespace
// is nsPid; it returns 0 when none is.
func hostPid(pids []int, nsPid int) int {
	for _, p := range pids {
		if n, ok := jobPid(p); ok && n == nsPid {
			return p
		}
	}
	return 0
}

// NSPids maps the job's processes' pids inside its PID namespace to their
// pids on the node; without a sandbox the two are the same.
func (j *Job) NSPids() map[int]int {
	out := map[int]int{}
	for _, p := range j.Pids() {
		if j.sandbox == nil {
			out[p] = p
		} else if n, ok := jobPid(p); ok {
			out[n] = p
		}
	}
	return out
}
