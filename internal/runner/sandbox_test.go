package runner

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if IsInit(os.Args[0]) {
		os.Exit(Init())
	}
	os.Exit(m.Run())
}

// sandboxSpec runs argv in a sandbox with the host's runtime and a
// writable /work, as the job user 3000000.
func sandboxSpec(t testing.TB, name string, argv ...string) (Spec, *syncBuffer, *syncBuffer) {
	t.Helper()
	if os.Geteuid() != 0 || CgroupV2Root() == "" {
		t.Skip("sandboxes need root and cgroup v2")
	}
	s, out, errb := spec(t, name, argv...)
	base := t.TempDir()
	work, root := filepath.Join(base, "work"), filepath.Join(base, "root")
	for _, d := range []string{work, root} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.Chown(work, 3000000, 3000000)
	s.Dir = "/work"
	s.Sandbox = &Sandbox{UID: 3000000, GID: 3000000, Root: root,
		Runtime: []string{"/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"},
		Binds:   []Bind{{Source: work, Target: "/work"}},
	}
	return s, out, errb
}

func runSandboxed(t *testing.T, s Spec) Exit {
	t.Helper()
	j, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := j.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestSandboxIdentity(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbid", "sh", "-c", `id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; echo $$; ls /; pwd; touch /work/f && echo wrote`)
	ex := runSandboxed(t, s)
	if ex.Code != 0 {
		t.Fatalf("exit %+v, out %q, err %q", ex, out.String(), errb.String())
	}
	t.Logf("%s", out.String())
	for _, want := range []string{"3000000\n3000000\n", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "/work\nwrote"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSandboxDeviceFilter(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbdev", "sh", "-c", `cat /dev/gpu0; cat /dev/gpu1; echo x > /dev/null && echo null-ok`)
	s.Sandbox.Devices = []Device{{Path: "gpu0", Major: 240, Minor: 0, Allow: true}, {Path: "gpu1", Major: 240, Minor: 1}}
	runSandboxed(t, s)
	// An allowed node reaches the (absent) driver; a denied one stops at the filter.
	if !strings.Contains(errb.String(), "/dev/gpu0: No such device or address") ||
		!strings.Contains(errb.String(), "/dev/gpu1: Operation not permitted") || !strings.Contains(out.String(), "null-ok") {
		t.Fatalf("out %q, err %q", out.String(), errb.String())
	}
}

// forkBomb forks sleeping children until the kernel refuses, at most 500.
const forkBomb = `
import os, time
n = 0
for i in range(500):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed:", e.strerror)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print("forked", n)
`

func TestSandboxPidsLimit(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbpids", "/usr/bin/python3", "-c", forkBomb)
	s.Sandbox.Pids = 40
	ex := runSandboxed(t, s)
	var n int
	fmt.Sscanf(out.String()[strings.Index(out.String(), "forked"):], "forked %d", &n)
	if ex.Code != 0 || !strings.Contains(out.String(), "fork failed: Resource temporarily unavailable") || n >= 40 {
		t.Fatalf("exit %+v, out %q, err %q", ex, out.String(), errb.String())
	}
}

func TestSandboxMemoryLimit(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbmem", "/usr/bin/python3", "-c", `b = b"x" * (400 << 20); print("survived")`)
	s.Sandbox.MemoryBytes = 64 << 20
	ex := runSandboxed(t, s)
	if ex.Code != 137 || strings.Contains(out.String(), "survived") {
		t.Fatalf("exit %+v, out %q, err %q", ex, out.String(), errb.String())
	}
}

func TestSandboxNotFoundAndSignal(t *testing.T) {
	s, _, _ := sandboxSpec(t, "sbnf", "no-such-command-hac")
	if _, err := Start(s); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Start = %v, want ErrNotFound", err)
	}
	s, _, _ = sandboxSpec(t, "sbsig", "sleep", "30")
	j, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ex, _ := j.Wait()
	if ex.Code != 143 || ex.Signal != syscall.SIGTERM {
		t.Fatalf("exit %+v, want SIGTERM", ex)
	}
}

func TestSandboxTerminal(t *testing.T) {
	s, out, _ := sandboxSpec(t, "sbtty", "sh", "-c", `tty; stty size; test -t 0 && echo is-a-tty`)
	s.TTY, s.Rows, s.Cols = true, 31, 97
	ex := runSandboxed(t, s)
	if ex.Code != 0 || !strings.Contains(out.String(), "/dev/pts/0") || !strings.Contains(out.String(), "31 97") || !strings.Contains(out.String(), "is-a-tty") {
		t.Fatalf("exit %+v, out %q", ex, out.String())
	}
}

// TestSandboxSignalsStartClean: a program starts with no ignored signals
// even when the agent was started ignoring some (nohup, a script that
// traps SIGINT with ”), so Ctrl+C and hang-ups reach it (SPEC A12).
func TestSandboxSignalsStartClean(t *testing.T) {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP)
	defer signal.Reset(syscall.SIGINT, syscall.SIGHUP)
	s, out, errb := sandboxSpec(t, "sbsig", "sh", "-c", `grep -E '^Sig(Blk|Ign)' /proc/self/status`)
	ex := runSandboxed(t, s)
	if ex.Code != 0 || !strings.Contains(out.String(), "SigBlk:\t0000000000000000") || !strings.Contains(out.String(), "SigIgn:\t0000000000000000") {
		t.Fatalf("exit %+v, out %q, err %q", ex, out.String(), errb.String())
	}
}

// TestSandboxNoUserNamespaces: a job cannot make a user namespace (which
// would hand it capabilities over new namespaces) or load BPF.
func TestSandboxNoUserNamespaces(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbuserns", "sh", "-c", `unshare -Ur true && echo made-userns; unshare -Urn true && echo made-netns; echo done`)
	ex := runSandboxed(t, s)
	if ex.Code != 0 || strings.Contains(out.String(), "made-") || !strings.Contains(errb.String(), "Operation not permitted") || !strings.Contains(out.String(), "done") {
		t.Fatalf("exit %+v, out %q, err %q", ex, out.String(), errb.String())
	}
}

// TestSandboxRefusesBindsOverItsOwn: no bind may cover what the init
// builds itself (its account files in /.hac, /proc, /dev, /sys): a
// workspace shown at /.hac once let a client's symlink there make the
// init, still root, write a node file.
func TestSandboxRefusesBindsOverItsOwn(t *testing.T) {
	for _, target := range []string{"/.hac", "/.hac/x", "/proc", "/dev/shm", "/sys/fs", "/.old"} {
		s, _, _ := sandboxSpec(t, "sbown", "true")
		s.Sandbox.Binds = append(s.Sandbox.Binds, Bind{Source: t.TempDir(), Target: target})
		if _, err := Start(s); err == nil || !strings.Contains(err.Error(), "would cover") {
			t.Errorf("a bind on %s: %v", target, err)
		}
	}
}

// TestSandboxPTYCap: a job cannot take the node's pseudo-terminals, which
// every devpts instance shares: its own devpts holds at most maxJobPTYs.
func TestSandboxPTYCap(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbpty", "/usr/bin/python3", "-c", `
import os
n = 0
try:
    for i in range(500):
        os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
        n += 1
except OSError as e:
    print("refused:", e.strerror)
print("opened", n)`)
	ex := runSandboxed(t, s)
	if ex.Code != 0 || !strings.Contains(out.String(), "refused:") || !strings.Contains(out.String(), fmt.Sprintf("opened %d\n", maxJobPTYs)) {
		t.Fatalf("exit %+v, out %q, err %q", ex, out.String(), errb.String())
	}
}

// TestSandboxNetwork: a job has a network of its own: loopback that
// works, and eth0 with an address of the jobs' subnet, and none of the
// node's interfaces.
func TestSandboxNetwork(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbnet", "sh", "-c", `ls /sys/class/net | tr '\n' ' '; echo; /usr/bin/python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); print("loopback ok")'`)
	ex := runSandboxed(t, s)
	if ex.Code != 0 {
		t.Fatalf("exit %+v: %s %s", ex, out, errb)
	}
	lines := strings.Split(out.String(), "\n")
	if lines[0] != "eth0 lo " || !strings.Contains(out.String(), "loopback ok") {
		t.Fatalf("the job's network: %q (stderr %s)", out.String(), errb)
	}
}

// TestSandboxEndsWholeJob: when the program ends, Wait returns only once
// every process of its job is gone, daemons that ignore SIGTERM and
// SIGHUP among them (the init reports the end after killing them, and
// Wait does not wait for the kernel's own teardown); Released then finds
// the job's cgroup removed.
func TestSandboxEndsWholeJob(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbend", "sh", "-c", `exec </dev/null >/dev/null 2>&1; setsid sh -c 'trap "" TERM HUP; sleep 300' & sleep 300 & touch /work/started; sleep 0.5`)
	l := NewLauncher(CgroupV2Root())
	defer l.Close()
	j, err := l.Start(s)
	if err != nil {
		t.Fatal(err)
	}
	work := s.Sandbox.Binds[0].Source
	for _, err := os.Stat(filepath.Join(work, "started")); err != nil; _, err = os.Stat(filepath.Join(work, "started")) {
		time.Sleep(10 * time.Millisecond)
	}
	// The init, sh and its last sleep, the daemon's sh and sleep, the other
	// sleep: all there within the program's half second.
	pids := j.Pids()
	for deadline := time.Now().Add(5 * time.Second); len(pids) < 6 && time.Now().Before(deadline); pids = j.Pids() {
		time.Sleep(5 * time.Millisecond)
	}
	if len(pids) < 6 {
		t.Fatalf("the job's processes: %v", pids)
	}
	ex, err := j.Wait()
	if err != nil || ex.Code != 0 {
		t.Fatalf("exit %+v, %v, out %q, err %q", ex, err, out.String(), errb.String())
	}
	for _, p := range pids {
		if p != j.cmd.Process.Pid && alive(p) {
			t.Errorf("process %d of the job outlived its Wait", p)
		}
	}
	if err := j.Released(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(j.Cgroup()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the job's cgroup after Released: %v", err)
	}
}

// TestWarmInitLowPriority: a warm init waits at nice 19, all its
// threads, so that making it does not slow the node's running jobs, and
// the job it starts runs at nice 0.
func TestWarmInitLowPriority(t *testing.T) {
	s, out, errb := sandboxSpec(t, "sbnice", "cat", "/proc/self/stat")
	l := NewLauncher(CgroupV2Root())
	defer l.Close()
	var w *warmInit
	for deadline := time.Now().Add(10 * time.Second); w == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		w = l.warm
		l.mu.Unlock()
	}
	if w == nil {
		t.Fatal("no warm init after 10 s")
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", w.cmd.Process.Pid))
	for _, task := range tasks {
		if n := niceOf(t, task); n != 19 {
			t.Errorf("%s: nice %d while warm, want 19", task, n)
		}
	}
	if len(tasks) == 0 {
		t.Fatal("the warm init has no threads")
	}
	ex := func() Exit {
		j, err := l.Start(s)
		if err != nil {
			t.Fatal(err)
		}
		ex, _ := j.Wait()
		return ex
	}()
	if ex.Code != 0 {
		t.Fatalf("exit %+v: %s", ex, errb)
	}
	if n := statNice(t, out.String()); n != 0 {
		t.Errorf("the job runs at nice %d, want 0", n)
	}
}

func niceOf(t *testing.T, stat string) int {
	raw, err := os.ReadFile(stat)
	if err != nil {
		t.Fatal(err)
	}
	return statNice(t, string(raw))
}

// statNice is the nice field of a /proc/PID/stat line (the 19th; the
// command, in parentheses, may hold spaces).
func statNice(t *testing.T, line string) int {
	f := strings.Fields(line[strings.LastIndex(line, ")")+1:])
	if len(f) < 17 {
		t.Fatalf("stat line %q", line)
	}
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
