package runner

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the runner's copy goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func spec(t testing.TB, name string, argv ...string) (Spec, *syncBuffer, *syncBuffer) {
	var out, errb syncBuffer
	return Spec{Name: name + strconv.Itoa(os.Getpid()), Argv: argv, Env: []string{"PATH=/usr/bin:/bin"}, Dir: t.TempDir(),
		CgroupRoot: CgroupV2Root(), Stdout: &out, Stderr: &errb}, &out, &errb
}

func TestExitCodeAndOutput(t *testing.T) {
	s, out, errb := spec(t, "exit", "sh", "-c", "echo out; echo err >&2; exit 3")
	j, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := j.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if ex.Code != 3 || out.String() != "out\n" || errb.String() != "err\n" {
		t.Fatalf("exit %+v, out %q, err %q", ex, out.String(), errb.String())
	}
}

func TestNotFound(t *testing.T) {
	s, _, _ := spec(t, "nf", "no-such-command-hac")
	if _, err := Start(s); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Start = %v, want ErrNotFound", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), []byte("#!/bin/sh\n"), 0o644)
	if _, err := LookPath("./x", "", dir); !errors.Is(err, ErrNotExecutable) {
		t.Fatalf("LookPath = %v, want ErrNotExecutable", err)
	}
}

func alive(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie is dead for our purposes.
	fields := strings.Fields(string(raw))
	return len(fields) > 2 && fields[2] != "Z"
}

// TestKillsDaemonizedChildren starts a program whose child escapes with
// setsid into the background, and checks the child dies with the job.
func TestKillsDaemonizedChildren(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for cgroups")
	}
	testKillsDaemonized(t, "", "cgroup v2")
}

// TestKillsDaemonizedChildrenFreezer is the same on the v1 freezer
// fallback, for hosts without a writable cgroup v2.
func TestKillsDaemonizedChildrenFreezer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for cgroups")
	}
	if _, err := os.Stat("/sys/fs/cgroup/freezer"); err != nil {
		t.Skip("no v1 freezer hierarchy on this host")
	}
	testKillsDaemonized(t, "/proc/no-cgroup-v2-here", "cgroup v1 freezer")
}

func testKillsDaemonized(t *testing.T, root, isolation string) {
	s, out, _ := spec(t, "orphan", "sh", "-c", "setsid sh -c 'sleep 300 & echo $!; wait' & sleep 0.5")
	if root != "" {
		s.CgroupRoot = root
	}
	j, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	if j.Isolation() != isolation {
		t.Fatalf("isolation = %s, want %s", j.Isolation(), isolation)
	}
	if _, err := j.Wait(); err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("no pid printed: %q", out.String())
	}
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("daemonized child %d survived the job", pid)
	}
}

func TestTTYAndSignal(t *testing.T) {
	s, out, _ := spec(t, "tty", "sh", "-c", "tty >/dev/null && echo is-a-tty; stty size; trap 'echo got-int; exit 130' INT; echo ready; while :; do sleep 0.05; done")
	s.TTY, s.Rows, s.Cols = true, 33, 101
	j, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), "ready") {
		time.Sleep(10 * time.Millisecond)
	}
	j.Signal(syscall.SIGINT)
	ex, err := j.Wait()
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if ex.Code != 130 || !strings.Contains(got, "is-a-tty") || !strings.Contains(got, "33 101") || !strings.Contains(got, "got-int") {
		t.Fatalf("exit %+v, output %q", ex, got)
	}
}

func TestKill(t *testing.T) {
	s, _, _ := spec(t, "kill", "sleep", "300")
	j, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Kill(); err != nil {
		t.Fatal(err)
	}
	ex, _ := j.Wait()
	if ex.Signal != syscall.SIGKILL || ex.Code != 137 {
		t.Fatalf("exit = %+v, want SIGKILL", ex)
	}
}
