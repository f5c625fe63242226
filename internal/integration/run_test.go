package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/hac-project/hac/internal/cli"
)

const readyLines = `[info] Requesting resources for HAC AI Accelerator from the server...
[info] Initializing the worker daemon for HAC AI Accelerator...
[info] [1/1] Connecting to resources on the server (ADDR)...
[info] Establishing links to the resources...
[info] HAC AI Accelerator is ready to use.
`

var addrRe = regexp.MustCompile(`\(127\.0\.0\.1:[0-9]+\)`)

// TestRunStdioExitCodeAndEnv covers SPEC A3: the exact status lines, stdout
// and stderr kept apart, stdin, the exit code, and the job's environment.
func TestRunStdioExitCodeAndEnv(t *testing.T) {
	c := newCluster(t, "fake:2x80GiB")
	tok := c.register("web1", "small.16gb")
	dir := workdir(t, nil)
	r := runHac(t, c.serverEnv(tok), dir, strings.NewReader("from stdin\n"), "run", "--", "sh", "-c",
		`read line; echo "got $line"; echo "to stderr" >&2; echo "gpus=$CUDA_VISIBLE_DEVICES mem=$HAC_ACCELERATOR_MEMORY model=$HAC_ACCELERATOR_MODEL token=${HAC_TOKEN:-none}"; exit 7`)
	if r.code != 7 {
		t.Fatalf("exit code %d, want 7: %+v", r.code, r)
	}
	if !strings.HasPrefix(r.stdout, "got from stdin\n") {
		t.Errorf("stdout %q", r.stdout)
	}
	if !regexp.MustCompile(`gpus=GPU-fake-node1-[01] mem=16384 model=small.16gb token=none`).MatchString(r.stdout) {
		t.Errorf("job environment: %q", r.stdout)
	}
	if got := addrRe.ReplaceAllString(r.stderr, "(ADDR)"); got != readyLines+"to stderr\n" {
		t.Errorf("stderr:\n%s\nwant:\n%sto stderr", got, readyLines)
	}
	if j := c.jobs()[0]; j.State != "failed" || j.ExitCode != 7 {
		t.Errorf("job record %+v, want failed with exit 7", j)
	}
}

func TestRunCommandErrors(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	tok := c.register("web1", "")
	env := c.serverEnv(tok)
	r := runHac(t, env, workdir(t, nil), nil, "run", "--", "no-such-program-hac")
	if r.code != 127 || !strings.Contains(r.stderr, "hac: no-such-program-hac: command not found") {
		t.Errorf("not found: %+v", r)
	}
	r = runHac(t, env, workdir(t, map[string]string{"x.sh": "#!/bin/sh\n"}), nil, "run", "--", "./x.sh")
	if r.code != 126 {
		t.Errorf("not executable: %+v", r)
	}
	r = runHac(t, env, "", nil, "run")
	if r.code != 2 || !strings.Contains(r.stderr, "no command given") {
		t.Errorf("empty command: %+v", r)
	}
	r = runHac(t, env, "", nil, "run", "--bogus", "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "unknown flag: --bogus") {
		t.Errorf("unknown flag: %+v", r)
	}
	// The pool is free again after all of that.
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "true"); r.code != 0 {
		t.Errorf("run after errors: %+v", r)
	}
}

// TestWorkspaceRoundTrip covers SPEC A7: the folder goes up (minus ignored
// files), new and changed files come back, a second run sends no content,
// and a file edited locally during the run is not overwritten.
func TestWorkspaceRoundTrip(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	tok := c.register("web1", "")
	env := c.serverEnv(tok)
	dir := workdir(t, map[string]string{
		"train.py":       "print('hi')\n",
		"data/input.txt": "12345\n",
		"secret.key":     "do not send\n",
		".hacignore":     "*.key\n",
	})
	if r := runHac(t, env, dir, nil, "run", "--", "true"); r.code != 0 {
		t.Fatalf("first run: %+v", r)
	}
	agentLog := c.agents[0].stderr.String
	before := strings.Count(agentLog(), "blobs_received=0 ")
	r := runHac(t, env, dir, nil, "run", "--", "sh", "-c",
		`cat data/input.txt; test -e secret.key && echo LEAKED; mkdir -p out; echo trained > out/model.pt; echo changed >> data/input.txt`)
	if r.code != 0 || !strings.Contains(r.stdout, "12345") || strings.Contains(r.stdout, "LEAKED") {
		t.Fatalf("first run: %+v", r)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "out/model.pt")); string(got) != "trained\n" {
		t.Errorf("created file came back as %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "data/input.txt")); string(got) != "12345\nchanged\n" {
		t.Errorf("changed file came back as %q", got)
	}
	// The unchanged tree's second upload sent no content.
	if got := strings.Count(agentLog(), "blobs_received=0 "); got != before+1 {
		t.Errorf("second upload of an unchanged tree received blobs (%d uploads without blobs, want %d)", got, before+1)
	}

	// A local edit during the run wins; the program's version lands beside it.
	p, id := startRunIn(t, c, env, dir, holdScript+`; echo remote > train.py`)
	os.WriteFile(filepath.Join(dir, "train.py"), []byte("print('local edit')\n"), 0o644)
	stopHolder(t, c, "node1", id)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("third run exit %d", code)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "train.py")); string(got) != "print('local edit')\n" {
		t.Errorf("local edit overwritten: %q", got)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "train.py.hac-job*"))
	if len(matches) != 1 {
		t.Errorf("program's version not kept beside: %v; stderr %s", matches, p.stderr.String())
	}
}

// startRun starts hac run in the background and waits for the program to
// print "ready"; it returns the process and the job id.
func startRun(t *testing.T, c *cluster, env []string, script string) (*proc, string) {
	t.Helper()
	return startRunIn(t, c, env, workdir(t, nil), script)
}

// startRunIn is startRun in a given folder.
func startRunIn(t *testing.T, c *cluster, env []string, dir, script string) (*proc, string) {
	t.Helper()
	p := start(t, env, dir, nil, "run", "--", "sh", "-c", script)
	eventually(t, 30*time.Second, "the program to start", func() bool { return strings.Contains(p.stdout.String(), "ready") })
	return p, c.jobs()[0].ID
}

// TestSignalsAndOrphans covers SPEC A4: SIGINT is forwarded (exit 130) and
// a child that escaped with setsid dies with the job.
func TestSignalsAndOrphans(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	tok := c.register("web1", "")
	p, _ := startRun(t, c, c.serverEnv(tok),
		`setsid sh -c 'sleep 3011' & trap 'exit 130' INT; echo ready; while :; do sleep 0.1; done`)
	orphan := nodePid(t, "sleep 3011")
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.exitCode(); code != 130 {
		t.Fatalf("exit code after SIGINT = %d, want 130", code)
	}
	if processAlive(orphan) {
		syscall.Kill(orphan, syscall.SIGKILL)
		t.Fatalf("setsid child %d outlived its job", orphan)
	}
	eventually(t, 10*time.Second, "the accelerator to be free", func() bool {
		return strings.Contains(c.hac(c.serverEnv(tok), "", "smi").stdout, "|  -             |  -             |")
	})
}

// TestKilledClientReleases covers SPEC A4's kill -9 of hac run, and lease
// expiry when the client stops answering (SIGSTOP keeps its connections
// open but silent).
func TestKilledClientReleases(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	tok := c.register("web1", "")
	env := c.serverEnv(tok)

	p, id := startRun(t, c, env, `echo ready; sleep 3012`)
	pid := nodePid(t, "sleep 3012")
	p.cmd.Process.Kill()
	eventually(t, 20*time.Second, "the job to end after kill -9", func() bool { return c.job(id).State != "running" })
	eventually(t, 10*time.Second, "the program to die", func() bool { return !processAlive(pid) })

	p, id = startRun(t, c, env, `echo ready; sleep 3013`)
	pid = nodePid(t, "sleep 3013")
	p.cmd.Process.Signal(syscall.SIGSTOP)
	defer p.cmd.Process.Signal(syscall.SIGCONT)
	eventually(t, 20*time.Second, "the lease to expire", func() bool {
		j := c.job(id)
		return j.State == "lost" && strings.Contains(j.EndReason, "lease expired")
	})
	eventually(t, 10*time.Second, "the program to die after lease expiry", func() bool { return !processAlive(pid) })
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--wait", "20s", "--", "true"); r.code != 0 {
		t.Fatalf("the accelerator was not free after expiry: %+v", r)
	}
}

// TestCheckpointsComeBackWhileRunning covers SPEC A7's periodic sync: a
// file the program writes reaches the client while it still runs, and its
// final version replaces it at the end.
func TestCheckpointsComeBackWhileRunning(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	dir := workdir(t, nil)
	p, id := startRunIn(t, c, env, dir, `mkdir -p ckpt; echo epoch1 > ckpt/model.txt; `+holdScript+`; echo epoch2 > ckpt/model.txt`)
	local := filepath.Join(dir, "ckpt", "model.txt")
	eventually(t, 20*time.Second, "the checkpoint to come back while the program runs", func() bool {
		got, _ := os.ReadFile(local)
		return string(got) == "epoch1\n"
	})
	if j := c.job(id); j.State != "running" {
		t.Fatalf("the job is %s, not running", j.State)
	}
	stopHolder(t, c, "node1", id)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	if got, _ := os.ReadFile(local); string(got) != "epoch2\n" {
		t.Fatalf("final checkpoint %q, want epoch2", got)
	}
	if strings.Contains(p.stderr.String(), "changed here") {
		t.Errorf("hac's own mid-run copy was taken for a local edit: %s", p.stderr.String())
	}
}

// TestAgentStartedIgnoringSignals: an agent started as nohup or a
// background shell starts it (SIGHUP and SIGINT ignored) gives its
// programs the default dispositions, with the sandbox and without, so
// that Ctrl+C reaches them.
func TestAgentStartedIgnoringSignals(t *testing.T) {
	for _, args := range [][]string{nil, {"--no-sandbox"}} {
		t.Run(fmt.Sprintf("agent%v", args), func(t *testing.T) {
			c := newCluster(t)
			c.agentArgs = args
			signal.Ignore(syscall.SIGINT, syscall.SIGHUP) // inherited by the agent
			c.addAgent("node1", "fake:1x80GiB")
			signal.Reset(syscall.SIGINT, syscall.SIGHUP)
			env := c.serverEnv(c.register("web1", ""))
			r := c.hac(env, t.TempDir(), "run", "--", "grep", "^Sig", "/proc/self/status")
			if r.code != 0 || !strings.Contains(r.stdout, "SigIgn:\t0000000000000000") {
				t.Fatalf("the program's signals (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestInterruptTwiceAndQuit covers SPEC A12's keys: a program that traps
// SIGINT lives through one Ctrl+C and is killed, whole, by a second within
// 2 s; Ctrl+\ reaches the program as SIGQUIT, with no stack dump from the
// client.
func TestInterruptTwiceAndQuit(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	p, _ := startRun(t, c, env, `trap 'echo got-int' INT; echo ready; while :; do sleep 0.1; done`)
	p.cmd.Process.Signal(syscall.SIGINT)
	eventually(t, 10*time.Second, "the first interrupt to reach the program", func() bool { return strings.Contains(p.stdout.String(), "got-int") })
	select {
	case <-p.done:
		t.Fatalf("one Ctrl+C ended a program that traps it: %s", p.stderr.String())
	case <-time.After(200 * time.Millisecond):
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.exitCode(); code != 137 || !strings.Contains(p.stderr.String(), "Interrupted twice") {
		t.Fatalf("after a second Ctrl+C: exit %d\n%s", code, p.stderr.String())
	}

	p, _ = startRun(t, c, env, `trap 'echo got-quit; exit 3' QUIT; echo ready; while :; do sleep 0.1; done`)
	p.cmd.Process.Signal(syscall.SIGQUIT)
	if code := p.exitCode(); code != 3 || !strings.Contains(p.stdout.String(), "got-quit") || strings.Contains(p.stderr.String(), "goroutine") {
		t.Fatalf("after Ctrl+\\: exit %d\nstdout %s\nstderr %s", code, p.stdout.String(), p.stderr.String())
	}
}

// TestCtrlZThenFg covers SPEC A12's Ctrl+Z under a real terminal (the
// client's stdin and controlling terminal; its output to a file, so no
// raw mode): Ctrl+Z stops the client and freezes the program's whole tree;
// the job outlives many lease times suspended (its GPUs held), also
// across a restart of the control plane (which hears of the suspension
// from the node); fg (SIGCONT to the group, as a shell sends it) thaws it,
// twice over, and Ctrl+C then ends it as usual.
func TestCtrlZThenFg(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB") // lease TTL 3 s
	env := c.serverEnv(c.register("web1", ""))
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	go io.Copy(io.Discard, ptmx)
	cmd := exec.Command(hacBin, "run", "--", "sh", "-c", `trap 'exit 7' INT; echo ready; sleep 3014 & wait`)
	var stdout, stderr lockedBuffer
	cmd.Env, cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, t.TempDir(), tty, &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("hac run's stderr:\n%s", stderr.String())
		}
	}()
	eventually(t, 30*time.Second, "the program to start", func() bool { return strings.Contains(stdout.String(), "ready") })
	id := c.jobs()[0].ID
	prog := nodePid(t, "sleep 3014")
	for round := range 2 {
		ptmx.Write([]byte{0x1a}) // Ctrl+Z
		eventually(t, 10*time.Second, "the client to stop", func() bool { return procState(cmd.Process.Pid) == "T" })
		eventually(t, 10*time.Second, "the program to freeze", func() bool { return frozen(t, prog) })
		if round == 0 {
			c.restartServe() // forgets the client's request for the suspended lease
		}
		time.Sleep(time.Duration(8-4*round) * time.Second) // over a lease time: the behaviour under test is what happens over time
		if j := c.job(id); j.State != "running" {
			t.Fatalf("round %d: the job while suspended: %+v", round, j)
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT) // fg
		eventually(t, 10*time.Second, "the program to thaw", func() bool { return !frozen(t, prog) })
		time.Sleep(4 * time.Second) // another lease time, renewed as usual again
		if j := c.job(id); j.State != "running" {
			t.Fatalf("round %d: the job after fg: %+v", round, j)
		}
	}
	ptmx.Write([]byte{0x03}) // Ctrl+C
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("hac run did not end after Ctrl+C")
	}
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Fatalf("exit %d after fg and Ctrl+C", code)
	}
}

// procState is a process's state letter (R, S, T...).
func procState(pid int) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := strings.LastIndexByte(string(raw), ')'); i > 0 && i+2 < len(raw) {
		return string(raw[i+2])
	}
	return ""
}

// frozen reports whether pid's cgroup v2 is frozen.
func frozen(t *testing.T, pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			for _, mount := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
				if events, err := os.ReadFile(filepath.Join(mount, path, "cgroup.events")); err == nil {
					return strings.Contains(string(events), "frozen 1")
				}
			}
		}
	}
	return false
}

// TestServerTokenBesideAConfigFile: a server token in HAC_TOKEN runs on
// its own server even when the user's config file names another server.
func TestServerTokenBesideAConfigFile(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	conf := filepath.Join(c.home, ".config", "hac", "config")
	os.MkdirAll(filepath.Dir(conf), 0o700)
	if err := os.WriteFile(conf, []byte(cli.FormatConfig(cli.Config{Addr: c.addr, CAPin: c.pin, Token: c.creds.AdminToken, Server: "dev"})), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c.hac(env, t.TempDir(), "run", "--", "true"); r.code != 0 {
		t.Fatalf("hac run with a server token beside a config naming another server: %+v", r)
	}
}

// TestFileGrowingDuringUpload: a log that another program appends to
// while hac run reads and sends the folder does not fail the run: the
// program sees it as it was listed, a prefix of what it is now.
func TestFileGrowingDuringUpload(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	dir := workdir(t, nil)
	logPath := filepath.Join(dir, "grow.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	line := bytes.Repeat([]byte("x"), 1023)
	for range 32 << 10 { // 32 MiB to start with
		f.Write(append(line, '\n'))
	}
	stop := make(chan struct{})
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		for {
			select {
			case <-stop:
				return
			default:
				f.Write(append(line, '\n'))
			}
		}
	}()
	r := runHac(t, env, dir, nil, "run", "--", "sh", "-c", "wc -c < grow.log; sha256sum grow.log")
	close(stop)
	<-appended
	f.Close()
	if r.code != 0 {
		t.Fatalf("hac run with a file growing meanwhile: %+v", r)
	}
	var size int64
	var sum string
	if _, err := fmt.Sscanf(r.stdout, "%d\n%s", &size, &sum); err != nil {
		t.Fatalf("the program's output %q: %v", r.stdout, err)
	}
	local, _ := os.ReadFile(logPath)
	if size < 32<<20 || size > int64(len(local)) {
		t.Fatalf("the program saw %d bytes; the file had 32 MiB before and %d after", size, len(local))
	}
	if got := sha256.Sum256(local[:size]); hex.EncodeToString(got[:]) != sum {
		t.Errorf("the program's copy is not what the file held at %d bytes", size)
	}
}

// TestWorkspaceOverlay: a sandboxed job's workspace is the node's shared
// copy of the uploaded files under an overlay whose upper takes the job's
// writes. The job owns its files and may change, rename and remove them;
// what it changed comes back (a folder it renamed arrives copied); and
// nothing it did reaches the shared copy: the next run of the same files
// finds them as uploaded, on the very same inodes (no copy was made).
func TestWorkspaceOverlay(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	dir := workdir(t, map[string]string{
		"a.txt":       "alpha\n",
		"bin/run.sh":  "#!/bin/sh\necho run\n",
		"sub/data.in": "12345\n",
	})
	os.Chmod(filepath.Join(dir, "bin/run.sh"), 0o755)
	r := runHac(t, env, dir, nil, "run", "--", "sh", "-c", `set -e
echo uid $(id -u); stat -c '%n %u %a %i' a.txt bin/run.sh
echo evil > a.txt; rm a.txt; chmod 600 bin/run.sh; rm bin/run.sh
mv sub moved; echo more >> moved/data.in; echo new > new.txt
echo volatile $(grep -c volatile /proc/self/mountinfo)`)
	if r.code != 0 {
		t.Fatalf("first run: %+v", r)
	}
	uid := regexp.MustCompile(`uid (\d+)`).FindStringSubmatch(r.stdout)
	first := regexp.MustCompile(`a\.txt (\d+) (\d+) (\d+)`).FindStringSubmatch(r.stdout)
	script := regexp.MustCompile(`bin/run\.sh (\d+) (\d+)`).FindStringSubmatch(r.stdout)
	if uid == nil || first == nil || script == nil || first[1] != uid[1] || first[2] != "644" || script[1] != uid[1] || script[2] != "755" {
		t.Fatalf("the workspace's files are not the job's own, with their modes: %q", r.stdout)
	}
	if !strings.Contains(r.stdout, "volatile 1") {
		t.Errorf("an attached job's workspace overlay is not volatile (its end would sync the node's disk): %q", r.stdout)
	}
	for rel, want := range map[string]string{"moved/data.in": "12345\nmore\n", "new.txt": "new\n", "a.txt": "alpha\n", "sub/data.in": "12345\n"} {
		if got, _ := os.ReadFile(filepath.Join(dir, rel)); string(got) != want {
			t.Errorf("%s here after the run: %q, want %q", rel, got, want)
		}
	}
	os.RemoveAll(filepath.Join(dir, "moved"))
	os.Remove(filepath.Join(dir, "new.txt"))
	r = runHac(t, env, dir, nil, "run", "--", "sh", "-c", `cat a.txt bin/run.sh sub/data.in; stat -c '%n %i' a.txt`)
	if r.code != 0 || r.stdout != "alpha\n#!/bin/sh\necho run\n12345\na.txt "+first[3]+"\n" {
		t.Fatalf("the next run of the same files: %+v, want them as uploaded on inode %s", r, first[3])
	}
}
