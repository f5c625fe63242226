package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hacBin is the binary under test, built once by TestMain.
var hacBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hac-integration-")
	if err != nil {
		panic(err)
	}
	hacBin = filepath.Join(dir, "hac")
	args := []string{"build", "-o", hacBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/hac-project/hac/cmd/hac")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build hac:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer collects a process's output safely.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventually polls cond until it holds or the deadline passes. It waits on
// observable state of other processes, never on a fixed sleep.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proc is a background hac process.
type proc struct {
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	err    error
}

func (p *proc) exitCode() int {
	<-p.done
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// start runs hac in the background; the test's cleanup kills it.
func start(t testing.TB, env []string, dir string, stdin io.Reader, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(hacBin, args...), done: make(chan struct{})}
	p.cmd.Env, p.cmd.Dir, p.cmd.Stdin = env, dir, stdin
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("hac %s\n--- stdout\n%s--- stderr\n%s", strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// result is a finished hac command.
type result struct {
	stdout, stderr string
	code           int
}

// cluster is a control plane with agents, and a client environment.
type cluster struct {
	t     testing.TB
	dir   string
	addr  string
	pin   string // the control plane's CA pin
	creds struct {
		AdminToken string `json:"admin_token"`
	}
	serve  *proc
	agents []*proc
	home   string
	// serveArgs are added to hac serve's; agentListen replaces the
	// agents' loopback address.
	serveArgs   []string
	agentListen string
	agentPath   string
	agentArgs   []string // added to every hac agent's
}

// newCluster starts hac serve with short leases and one agent per GPU spec.
func newCluster(t testing.TB, gpus ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir()}
	c.home = filepath.Join(c.dir, "home")
	os.MkdirAll(c.home, 0o755)
	c.startServe()
	for i, g := range gpus {
		c.addAgent(fmt.Sprintf("node%d", i+1), g)
	}
	return c
}

func (c *cluster) startServe() { c.startServeOn("127.0.0.1:0") }

// restartServe stops hac serve and starts it again on the same address
// and data.
func (c *cluster) restartServe() {
	c.serve.cmd.Process.Signal(syscall.SIGTERM)
	<-c.serve.done
	c.startServeOn(strings.TrimPrefix(c.addr, "https://"))
}

func (c *cluster) startServeOn(listen string) {
	data := filepath.Join(c.dir, "cp")
	os.Remove(filepath.Join(data, "serve.addr"))
	os.Remove(filepath.Join(data, "serve.pin"))
	args := append([]string{"serve", "--listen", listen, "--data-dir", data,
		"--lease-ttl", "3s", "--heartbeat", "200ms", "--node-lost-after", "2s"}, c.serveArgs...)
	c.serve = start(c.t, c.baseEnv(), c.dir, nil, args...)
	eventually(c.t, 30*time.Second, "hac serve to start", func() bool {
		raw, err := os.ReadFile(filepath.Join(data, "serve.addr"))
		if err != nil {
			return false
		}
		c.addr = "https://" + string(raw)
		pin, err := os.ReadFile(filepath.Join(data, "serve.pin"))
		if err != nil {
			return false
		}
		c.pin = string(pin)
		cr, err := os.ReadFile(filepath.Join(data, "credentials.json"))
		return err == nil && json.Unmarshal(cr, &c.creds) == nil && c.creds.AdminToken != ""
	})
}

func (c *cluster) addAgent(name, gpus string) *proc {
	listen := "127.0.0.1:0"
	if c.agentListen != "" {
		listen = c.agentListen
	}
	env := c.baseEnv()
	if c.agentPath != "" {
		env[0] = "PATH=" + c.agentPath
	}
	args := []string{"agent", "--server", c.addr, "--name", name, "--gpus", gpus, "--listen", listen, "--data-dir", filepath.Join(c.dir, name), "--sync-interval", "300ms", "--memory-interval", "200ms"}
	dataDir := filepath.Join(c.dir, name)
	if _, err := os.Stat(filepath.Join(dataDir, "node-credential.json")); err != nil {
		// First start: enroll the node as an admin would.
		r := c.hac(nil, "", "node", "add", name)
		join := filepath.Join(c.dir, name+".join")
		if r.code != 0 || os.WriteFile(join, []byte(r.stdout), 0o600) != nil {
			c.t.Fatalf("hac node add %s: %+v", name, r)
		}
		args = append(args, "--join-file", join)
	}
	p := start(c.t, env, c.dir, nil, append(args, c.agentArgs...)...)
	c.agents = append(c.agents, p)
	eventually(c.t, 30*time.Second, "node "+name+" to register", func() bool {
		r := c.hac(nil, "", "nodes")
		return regexp.MustCompile(`(?m)^` + name + `\s+ready`).MatchString(r.stdout)
	})
	return p
}

// baseEnv is a minimal environment: no config file but what a test writes.
func (c *cluster) baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.home, "LANG=C.UTF-8"}
}

// apiEnv reaches the control plane with tok.
func (c *cluster) apiEnv(tok string) []string {
	return append(c.baseEnv(), "HAC_ADDR="+c.addr, "HAC_CA_PIN="+c.pin, "HAC_TOKEN="+tok)
}

// userEnv acts as the admin user on a server.
func (c *cluster) userEnv(server string) []string {
	return append(c.apiEnv(c.creds.AdminToken), "HAC_SERVER="+server)
}

// hac runs a client command as the admin user and waits for it.
func (c *cluster) hac(env []string, dir string, args ...string) result {
	c.t.Helper()
	if env == nil {
		env = c.userEnv("")
	}
	return runHac(c.t, env, dir, nil, args...)
}

func runHac(t testing.TB, env []string, dir string, stdin io.Reader, args ...string) result {
	t.Helper()
	cmd := exec.Command(hacBin, args...)
	cmd.Env, cmd.Dir, cmd.Stdin = env, dir, stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil && ctx.Err() == context.DeadlineExceeded {
			cmd.Process.Kill()
		}
	}()
	cmd.Run()
	return result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// register makes a server and returns its token.
func (c *cluster) register(name, model string) string {
	c.t.Helper()
	args := []string{"server", "register", name}
	if model != "" {
		args = append(args, "--model", model)
	}
	r := c.hac(nil, "", args...)
	m := regexp.MustCompile(`hacs_[A-Z0-9]+`).FindString(r.stdout)
	if r.code != 0 || m == "" {
		c.t.Fatalf("register %s: %+v", name, r)
	}
	return m
}

// serverEnv acts with a server's own token, as on that server.
func (c *cluster) serverEnv(tok string) []string {
	return c.apiEnv(tok)
}

type jobJSON struct {
	ID         string `json:"id"`
	Server     string `json:"server"`
	State      string `json:"state"`
	ExitCode   int    `json:"exitCode"`
	EndReason  string `json:"endReason"`
	Placements []struct {
		Node      string `json:"node"`
		GpuUUID   string `json:"gpuUuid"`
		MemoryMib int64  `json:"memoryMib"`
	} `json:"placements"`
}

func (c *cluster) jobs() []jobJSON {
	c.t.Helper()
	r := c.hac(nil, "", "jobs", "-o", "json", "--limit", "1000")
	var out struct {
		Jobs []jobJSON `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		c.t.Fatalf("jobs -o json: %v\n%s%s", err, r.stdout, r.stderr)
	}
	return out.Jobs
}

func (c *cluster) job(id string) jobJSON {
	for _, j := range c.jobs() {
		if j.ID == id {
			return j
		}
	}
	c.t.Fatalf("no job %s", id)
	return jobJSON{}
}

// processAlive reports whether pid runs (zombies count as dead).
func processAlive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(raw))
	return len(f) > 2 && f[2] != "Z"
}

// nodePid finds the node pid of a job's process by the start of its
// command line (arguments joined by spaces): jobs run in PID namespaces of
// their own, so the pids they print are not the node's.
func nodePid(t testing.TB, cmdline string) int {
	t.Helper()
	var pid int
	eventually(t, 10*time.Second, "a process running "+cmdline, func() bool {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			n, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n))
			if err == nil && strings.HasPrefix(strings.ReplaceAll(string(raw), "\x00", " "), cmdline) {
				pid = n
				return true
			}
		}
		return false
	})
	return pid
}

// workdir makes a client working folder with files.
func workdir(t testing.TB, files map[string]string) string {
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeIn creates a file in a running job's workspace on a node, the way
// tests tell a program to go on without a second client. A sandboxed
// job's workspace is an overlay in its own mount namespace, so the file is
// made through the program's current folder as /proc shows it (a file put
// in the overlay's upper folder from outside may never be seen); the
// program is found by its HAC_JOB_ID, on this node by the file's landing
// in the node's folder of the job.
func writeIn(t testing.TB, c *cluster, node, jobID, name string) {
	t.Helper()
	upper := filepath.Join(c.dir, node, "jobs", jobID, "work", name)
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		env, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), []byte("\x00HAC_JOB_ID="+jobID+"\x00")) {
			continue
		}
		inJob := filepath.Join(p, "cwd", name)
		if err := os.WriteFile(inJob, nil, 0o644); err != nil {
			continue
		}
		if _, err := os.Lstat(upper); err == nil {
			return
		}
		os.Remove(inJob) // another node's rank of the job
	}
	t.Fatalf("signal job %s: no program of it on %s", jobID, node)
}
