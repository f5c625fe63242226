package runner

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hac-project/hac/internal/idmap"
)

func init() {
	if IsInit(os.Args[0]) {
		// Thread attributes (no_new_privs, the capability bounding set)
		// are set on this thread and the program is forked from it.
		runtime.LockOSThread()
	}
}

// IsInit reports whether a process started as argv0 is a sandbox's init.
func IsInit(argv0 string) bool { return filepath.Base(argv0) == InitName }

// Init is the main of a sandbox's first process, PID 1 of the job's PID
// namespace. As root in the job's new mount namespace it assembles the
// job's root file system, then starts the program with the job's uid, no
// capabilities, no_new_privs, default signal dispositions and an empty
// signal mask, in a cgroup namespace rooted at the job's cgroup. It
// forwards the signals it gets to the program, reaps orphans, and reports
// how the program ended on its status pipe. When it returns, the kernel
// kills whatever is left in the namespace.
func Init() int {
	status := os.NewFile(initStatusFD, "status")
	fail := func(code int, format string, args ...any) int {
		msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
		fmt.Fprintf(status, "error %d %s\n", code, msg)
		return code
	}
	if err := cleanSignals(); err != nil {
		return fail(1, "sandbox: reset signals: %v", err)
	}
	// Every signal is caught from here on, so none ends the init early;
	// handled signals also reach the program as SIG_DFL.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs)
	// The program must not inherit the agent's pipes.
	syscall.CloseOnExec(initConfigFD)
	syscall.CloseOnExec(initStatusFD)
	var cfg initConfig
	stdio, err := receive(&cfg)
	if err != nil {
		return fail(1, "sandbox: read configuration: %v", err)
	}
	if len(stdio) == 3 {
		for i, fd := range stdio {
			if err := unix.Dup3(fd, i, 0); err != nil {
				return fail(1, "sandbox: stdio: %v", err)
			}
			unix.Close(fd)
		}
	}
	syscall.Umask(0)
	if err := buildRoot(&cfg); err != nil {
		return fail(1, "sandbox: %v", err)
	}
	syscall.Umask(0o022)
	if len(cfg.Argv) == 0 {
		return fail(127, "empty command")
	}
	path, err := LookPath(cfg.Argv[0], envValue(cfg.Env, "PATH"), cfg.Dir)
	if err != nil {
		code := 127
		if errors.Is(err, ErrNotExecutable) {
			code = 126
		}
		return fail(code, "%s: %v", cfg.Argv[0], err)
	}
	attr := &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(cfg.UID), Gid: uint32(cfg.GID), Groups: []uint32{}},
		Setpgid:    true,
		Cloneflags: syscall.CLONE_NEWCGROUP,
	}
	files := []uintptr{0, 1, 2}
	var tty *os.File
	if cfg.TTY {
		// The agent opens a terminal in this sandbox's devpts; the program
		// gets its slave as its controlling terminal, in a session of its own.
		fmt.Fprintf(status, "tty-ready\n")
		var msg ttyMessage
		if _, err := receive(&msg); err != nil {
			return fail(1, "sandbox: read the terminal: %v", err)
		}
		var err error
		tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", msg.PTY), os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			return fail(1, "sandbox: open the terminal: %v", err)
		}
		if err := tty.Chown(cfg.UID, cfg.GID); err != nil {
			return fail(1, "sandbox: the terminal: %v", err)
		}
		files = []uintptr{tty.Fd(), tty.Fd(), tty.Fd()}
		attr.Setpgid, attr.Setsid, attr.Setctty, attr.Ctty = false, true, true, 0
	}
	if err := dropPrivileges(); err != nil {
		return fail(1, "sandbox: drop privileges: %v", err)
	}
	if err := installJobFilter(); err != nil {
		return fail(1, "sandbox: %v", err)
	}
	pid, err := syscall.ForkExec(path, cfg.Argv, &syscall.ProcAttr{Dir: cfg.Dir, Env: cfg.Env, Files: files, Sys: attr})
	if err != nil {
		code := 126
		if errors.Is(err, syscall.ENOENT) {
			code = 127
		}
		return fail(code, "%s: %v", cfg.Argv[0], err)
	}
	// Only the program holds its stdio and terminal now, so that they
	// close when the job ends, not when this init does.
	letGoOfStdio()
	if tty != nil {
		tty.Close()
	}
	fmt.Fprintf(status, "started %d\n", pid)
	for sig := range sigs {
		s := sig.(syscall.Signal)
		switch s {
		case syscall.SIGCHLD:
			if code, signo, done := reap(pid); done {
				endJob()
				fmt.Fprintf(status, "exit %d %d\n", code, signo)
				return 0
			}
		case syscall.SIGURG, syscall.SIGPIPE:
			// The Go runtime's own preemption signal, and broken pipes.
		default:
			syscall.Kill(-pid, s)
		}
	}
	return 0
}

// maxInitMessage bounds a message to the init (argv, environment and the
// account files travel in the first).
const maxInitMessage = 64 << 20

// receive reads one message from the agent into v (see warmInit.send),
// and the files that came with it. The agent closing the socket (it
// stopped) ends the init.
func receive(v any) ([]int, error) {
	head := make([]byte, 8)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, flags, _, err := unix.Recvmsg(initConfigFD, head, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("the agent went away")
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return nil, errors.New("too many files attached")
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if f, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, f...)
			}
		}
	}
	if err := readFull(initConfigFD, head[n:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint64(head)
	if size > maxInitMessage {
		return nil, fmt.Errorf("a message of %d bytes", size)
	}
	body := make([]byte, size)
	if err := readFull(initConfigFD, body); err != nil {
		return nil, err
	}
	return fds, json.Unmarshal(body, v)
}

// readFull fills b from fd (an os.File would close fd when collected).
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}

// reap collects every exited child; it reports the program's end once the
// program is among them.
func reap(program int) (code, signo int, done bool) {
	for {
		var ws syscall.WaitStatus
		p, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if p <= 0 || err != nil {
			return code, signo, done
		}
		if p != program {
			continue
		}
		done = true
		if ws.Signaled() {
			code, signo = 128+int(ws.Signal()), int(ws.Signal())
		} else {
			code = ws.ExitStatus()
		}
	}
}

// endJob kills every other process of the job's PID namespace and reaps
// them all, so that the end the init reports is the whole job's: the
// agent need not wait for the kernel's teardown of the namespaces, which
// follows the init's own exit. Orphans are reparented to the init before
// their parent can be reaped, so no child left means no process left.
func endJob() {
	syscall.Kill(-1, syscall.SIGKILL) // from PID 1: all of the namespace but itself
	for {
		if _, err := syscall.Wait4(-1, nil, 0, nil); err == syscall.ECHILD {
			return
		}
	}
}

// letGoOfStdio points the init's stdin, stdout and stderr at /dev/null.
func letGoOfStdio() {
	null, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		return // the pipes then close with the init
	}
	defer null.Close()
	for fd := 0; fd < 3; fd++ {
		unix.Dup3(int(null.Fd()), fd, 0)
	}
}

// cleanSignals gives the init, and so the program, an empty signal mask
// and no ignored signals, however the agent was started (nohup, a script
// that ignores SIGINT). The Go runtime keeps the mask and the ignored
// signals it started with, so the init clears them and executes itself
// again once.
func cleanSignals() error {
	blocked, ignored := signalState()
	if blocked == 0 && ignored == 0 {
		return nil
	}
	if os.Getenv("HAC_SANDBOX_SIGNALS_RESET") != "" {
		return fmt.Errorf("still blocked %#x, ignored %#x", blocked, ignored)
	}
	var dfl [4]uint64 // struct sigaction with SIG_DFL
	for sig := 1; sig <= 64; sig++ {
		if ignored&(1<<(sig-1)) != 0 {
			unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
		}
	}
	var empty uint64
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&empty)), 0, 8, 0, 0); e != 0 {
		return e
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, append(os.Environ(), "HAC_SANDBOX_SIGNALS_RESET=1"))
}

// signalState reads this thread's blocked and ignored signal sets.
func signalState() (blocked, ignored uint64) {
	raw, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			blocked, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			ignored, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return blocked, ignored
}

// dropPrivileges sets no_new_privs and empties the capability bounding
// set on this thread, from which the program is forked; the program's
// non-root uid then leaves it no capabilities at all.
func dropPrivileges() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	last := 63
	if raw, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

// buildRoot assembles the job's root file system on cfg.Root and makes it
// the root of this mount namespace.
func buildRoot(cfg *initConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := cfg.Root
	if cfg.needsIDMaps() {
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount /proc: %w", err)
		}
	}
	if cfg.OS != nil {
		if err := mountOverlay(root, cfg.OS, ""); err != nil {
			return fmt.Errorf("mount the job's root (the server's image and changes): %w", err)
		}
	} else if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("mount the root: %w", err)
	}
	// The shown files are written first, into a fresh tmpfs, where no bind
	// (validate refuses binds under /.hac) can have put anything.
	if err := mountAt(root, "/.hac", "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=16m"); err != nil {
		return err
	}
	for i, f := range cfg.Files {
		src := filepath.Join(root, ".hac", strconv.Itoa(i))
		out, err := os.OpenFile(src, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o644)
		if err != nil {
			return err
		}
		_, err = out.WriteString(f.Content)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	for _, p := range cfg.Runtime {
		if err := showRuntime(root, p, cfg.OS != nil); err != nil {
			return err
		}
	}
	if err := mountAt(root, "/proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	// A sysfs of its own: its network devices are the job's namespace's.
	if err := mountAt(root, "/sys", "sysfs", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := makeDev(root, cfg.Devices); err != nil {
		return err
	}
	for _, b := range cfg.Binds {
		if len(b.Lower) > 0 {
			if err := ensureDir(root, b.Target); err != nil {
				return err
			}
			if err := mountOverlay(filepath.Join(root, b.Target), b.overlay(), workspaceOverlay); err != nil {
				return fmt.Errorf("mount the overlay on %s: %w", b.Target, err)
			}
			continue
		}
		if err := bindAt(root, b.Source, b.Target, false); err != nil {
			return err
		}
	}
	// The job's own cgroup is all it may know of the node's.
	masked := append([]string{"/sys/fs/cgroup"}, cfg.Masked...)
	for _, m := range masked {
		if err := mask(root, m); err != nil {
			return err
		}
	}
	for i, f := range cfg.Files {
		if err := showFile(root, filepath.Join(root, ".hac", strconv.Itoa(i)), f.Path); err != nil {
			return err
		}
	}
	if err := ensureDir(root, cfg.Dir); err != nil {
		return err
	}
	// The shown files stay readable through their binds only.
	if err := unix.Unmount(filepath.Join(root, ".hac"), unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach /.hac: %w", err)
	}
	return pivot(root, cfg.OS == nil)
}

// needsIDMaps reports whether a layer is seen through an idmapped mount.
func (cfg *initConfig) needsIDMaps() bool {
	var layers []Layer
	if cfg.OS != nil {
		layers = cfg.OS.Lower
	}
	for _, b := range cfg.Binds {
		layers = append(layers, b.Lower...)
	}
	for _, l := range layers {
		if len(l.UIDs) > 0 || len(l.GIDs) > 0 {
			return true
		}
	}
	return false
}

// mountOverlay mounts an overlay of o's folders on dst, with extra
// options; layers with an id map are seen through idmapped mounts
// attached under o.Stage. The user namespaces of those are made through
// /proc (the maps of a child): buildRoot mounts this namespace's first.
func mountOverlay(dst string, o *Overlay, extra string) error {
	dirs := make([]string, len(o.Lower))
	namespaces := map[string]*idmap.Namespace{} // one per distinct map
	defer func() {
		for _, ns := range namespaces {
			ns.Close()
		}
	}()
	for i, l := range o.Lower {
		dirs[i] = l.Dir
		if len(l.UIDs) == 0 && len(l.GIDs) == 0 {
			continue
		}
		key := fmt.Sprint(l.UIDs, l.GIDs)
		ns := namespaces[key]
		if ns == nil {
			var err error
			if ns, err = idmap.New(l.UIDs, l.GIDs); err != nil {
				return err
			}
			namespaces[key] = ns
		}
		dirs[i] = filepath.Join(o.Stage, strconv.Itoa(i))
		if err := ns.Mount(l.Dir, dirs[i]); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(dirs, ":"), o.Upper, o.Work)
	if extra != "" {
		opts += "," + extra
	}
	if o.Volatile {
		// Kernels since 5.10; before, the syncs stay.
		if err := unix.Mount("overlay", dst, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts+",volatile"); !errors.Is(err, unix.EINVAL) {
			return err
		}
	}
	return unix.Mount("overlay", dst, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts)
}

// workspaceOverlay is the options of a workspace's overlay: its upper
// folder alone must tell what the program changed, so a renamed folder
// is copied (no redirects: rename(2) of an uploaded folder says EXDEV,
// which mv and shutil.move handle) and a changed mode copies the data
// too (no metacopy).
const workspaceOverlay = "redirect_dir=off,metacopy=off"

// showRuntime shows a host path read-only at the same place; without an
// OS of its own, a symlink is copied as one.
func showRuntime(root, p string, inOS bool) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 && !inOS {
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if err := ensureDir(root, filepath.Dir(p)); err != nil {
			return err
		}
		return os.Symlink(target, filepath.Join(root, p))
	}
	return bindAt(root, p, p, true)
}

// ensureDir makes target (absolute, inside root) a folder, refusing to go
// through a symlink on the way.
func ensureDir(root, target string) error {
	cur := root
	for _, part := range strings.Split(strings.Trim(target, "/"), "/") {
		if part == "" {
			continue
		}
		if part == ".." {
			return fmt.Errorf("mount point %s: no .. allowed", target)
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return fmt.Errorf("mount point %s: %w", target, err)
			}
		case err != nil:
			return fmt.Errorf("mount point %s: %w", target, err)
		case !fi.IsDir():
			return fmt.Errorf("mount point %s: %s is not a folder", target, cur)
		}
	}
	return nil
}

// ensureFile makes target (absolute, inside root) an empty file to mount on.
func ensureFile(root, target string) error {
	if err := ensureDir(root, filepath.Dir(target)); err != nil {
		return err
	}
	p := filepath.Join(root, target)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("mount point %s: %w", target, err)
		}
		return f.Close()
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("mount point %s is not a file", target)
	}
	return nil
}

func mountAt(root, target, source, fstype string, flags uintptr, data string) error {
	if err := ensureDir(root, target); err != nil {
		return err
	}
	if err := unix.Mount(source, filepath.Join(root, target), fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

// bindAt shows the host path source at target, recursively, never with
// set-uid programs or device nodes, and read-only when asked.
func bindAt(root, source, target string, readOnly bool) error {
	fi, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("bind %s: %w", source, err)
	}
	if fi.IsDir() {
		err = ensureDir(root, target)
	} else {
		err = ensureFile(root, target)
	}
	if err != nil {
		return err
	}
	dst := filepath.Join(root, target)
	if err := unix.Mount(source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, target, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(-1, dst, unix.AT_RECURSIVE, attr); err != nil {
		// Kernels before 5.12: the top mount only.
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV)
		if readOnly {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("", dst, "", flags, ""); err != nil {
			return fmt.Errorf("remount %s: %w", target, err)
		}
	}
	return nil
}

// mask hides a path that exists inside the sandbox.
func mask(root, p string) error {
	fi, err := os.Lstat(filepath.Join(root, p))
	if err != nil {
		return nil // not shown, nothing to hide
	}
	if fi.IsDir() {
		return mountAt(root, p, "tmpfs", "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0555,size=4k")
	}
	return unix.Mount("/dev/null", filepath.Join(root, p), "", unix.MS_BIND, "")
}

// showFile shows the file src, written by buildRoot, read-only at path,
// over what the runtime has there.
func showFile(root, src, path string) error {
	if err := ensureFile(root, path); err != nil {
		return err
	}
	dst := filepath.Join(root, path)
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("show %s: %w", path, err)
	}
	return unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
}

// maxJobPTYs bounds the pseudo-terminals of one job.
const maxJobPTYs = 32

// makeDev gives the job a /dev of its own: the standard nodes, the given
// ones, private pseudo-terminals and shared memory.
func makeDev(root string, devices []Device) error {
	if err := mountAt(root, "/dev", "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return err
	}
	dev := filepath.Join(root, "dev")
	for _, d := range append(append([]Device(nil), standardDevices...), devices...) {
		p := filepath.Join(dev, d.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.Major, d.Minor))); err != nil {
			return fmt.Errorf("make /dev/%s: %w", d.Path, err)
		}
	}
	// A bounded devpts: the node's pseudo-terminals are shared by every
	// instance, so one job must not take them all.
	if err := mountAt(root, "/dev/pts", "devpts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, fmt.Sprintf("newinstance,ptmxmode=0666,mode=0620,max=%d", maxJobPTYs)); err != nil {
		return err
	}
	if err := mountAt(root, "/dev/shm", "shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	for name, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k")
}

// pivot makes root the root of this mount namespace and drops the old
// one; a readOnly root is made read-only.
func pivot(root string, readOnly bool) error {
	old := filepath.Join(root, ".old")
	if err := os.Mkdir(old, 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(root, old); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the node's root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return err
	}
	if !readOnly {
		return nil
	}
	return unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m")
}
