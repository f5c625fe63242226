package integration

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"os/exec"

	"github.com/creack/pty"
)

const switchDialogue = `Current HAC AI Accelerator: small.16gb

1. small.16gb*
2. medium.32gb
3. large.48gb
4. large.64gb
5. xlarge.96gb
6. 2xlarge.192gb
7. 3xlarge.288gb
8. 4xlarge.384gb

Selection (1-8, q, Q): Selection (1-8, q, Q): Selection (1-8, q, Q): The HAC AI Accelerator model is successfully switched to  "xlarge.96gb".

1. small.16gb
2. medium.32gb
3. large.48gb
4. large.64gb
5. xlarge.96gb*
6. 2xlarge.192gb
7. 3xlarge.288gb
8. 4xlarge.384gb

Selection (1-8, q, Q): `

// TestSwitchModel covers SPEC A2: the dialogue from piped stdin (bad input
// re-asks, q quits), the direct form, refusal while in use, and the alias
// binary name.
func TestSwitchModel(t *testing.T) {
	c := newCluster(t, "fake:2x80GiB")
	tok := c.register("web1", "")
	env := c.serverEnv(tok)
	r := runHac(t, env, "", strings.NewReader("9\nabc\n5\nq\n"), "switch-model")
	if r.code != 0 || r.stdout != switchDialogue {
		t.Fatalf("dialogue (exit %d):\n%s\nwant:\n%s", r.code, r.stdout, switchDialogue)
	}
	// End of input quits cleanly.
	if r := runHac(t, env, "", strings.NewReader(""), "switch-model"); r.code != 0 || !strings.Contains(r.stdout, "5. xlarge.96gb*") {
		t.Fatalf("EOF: %+v", r)
	}
	// The alias binary name, with an argument.
	alias := filepath.Join(t.TempDir(), "hac-switch-model")
	os.Symlink(hacBin, alias)
	out, err := exec.Command(alias, "--addr", c.addr, "--ca-pin", c.pin, "--token", tok, "medium.32gb").CombinedOutput()
	if err != nil || string(out) != "The HAC AI Accelerator model is successfully switched to  \"medium.32gb\".\n" {
		t.Fatalf("hac-switch-model medium.32gb: %v %q", err, out)
	}
	if r := runHac(t, env, "", nil, "switch-model", "huge.1tb"); r.code == 0 || !strings.Contains(r.stderr, "unknown accelerator model") {
		t.Fatalf("unknown model: %+v", r)
	}
	p, id := startRun(t, c, env, holdScript)
	r = runHac(t, env, "", nil, "switch-model", "small.16gb")
	if r.code == 0 || r.stdout != "The model cannot be switched while the HAC AI Accelerator is in use.\n" {
		t.Fatalf("switch while in use: %+v", r)
	}
	stopHolder(t, c, "node1", id)
	p.exitCode()
	if r := runHac(t, env, "", nil, "switch-model", "small.16gb"); r.code != 0 {
		t.Fatalf("switch after the run: %+v", r)
	}
}

// TestSMI covers SPEC A1 against a live control plane: the idle table, the
// running table with the job's row, --json, --reset, and the hac-smi alias.
func TestSMI(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	tok := c.register("web1", "")
	env := c.serverEnv(tok)
	idle := runHac(t, env, "", nil, "smi")
	tokenRe := regexp.MustCompile(`\|  [A-Za-z0-9+/=]{24}  \|`)
	if idle.code != 0 || !tokenRe.MatchString(idle.stdout) || !strings.Contains(idle.stdout, "|  small.16gb  |  -             |  -             |") {
		t.Fatalf("idle smi: %+v", idle)
	}
	alias := filepath.Join(t.TempDir(), "hac-smi")
	os.Symlink(hacBin, alias)
	cmd := exec.Command(alias)
	cmd.Env = env
	if out, err := cmd.Output(); err != nil || string(out) != idle.stdout {
		t.Fatalf("hac-smi differs from hac smi: %v\n%s", err, out)
	}
	if r := runHac(t, env, "", nil, "smi", "--reset"); r.code == 0 || r.stdout != "Device release failed. (Not running job.)\n" {
		t.Fatalf("reset idle: %+v", r)
	}
	p, id := startRun(t, c, env, holdScript)
	busy := runHac(t, env, "", nil, "smi")
	row := regexp.MustCompile(`\|       1  \|\s+` + id + `  \|  \d+  \|  sh -c echo ready; while \[ ! -e stop \]; do sleep 0.05; done  \|  0 MiB         \|`)
	if !strings.Contains(busy.stdout, "|  0 MiB         |  16384 MiB     |") || !row.MatchString(busy.stdout) {
		t.Fatalf("running smi:\n%s", busy.stdout)
	}
	js := runHac(t, env, "", nil, "smi", "--json")
	var parsed struct {
		Accelerator struct {
			Model string `json:"model"`
			Job   struct {
				ID string `json:"id"`
			} `json:"job"`
		} `json:"accelerator"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &parsed); err != nil || parsed.Accelerator.Job.ID != id || parsed.Accelerator.Model != "small.16gb" {
		t.Fatalf("smi --json: %v\n%s", err, js.stdout)
	}
	if o := runHac(t, env, "", nil, "smi", "-o", "json"); o.stdout != js.stdout {
		t.Fatalf("smi -o json differs from smi --json:\n%s", o.stdout)
	}
	if r := runHac(t, env, "", nil, "smi", "--reset"); r.code != 0 || r.stdout != "Device release success.\n" {
		t.Fatalf("reset: %+v", r)
	}
	if code := p.exitCode(); code == 0 {
		t.Fatal("the program survived hac smi --reset")
	}
	if !strings.Contains(p.stderr.String(), "released by the server") {
		t.Errorf("no clear message after reset: %s", p.stderr.String())
	}
	if j := c.job(id); j.State != "canceled" {
		t.Errorf("job after reset: %+v", j)
	}
}

// TestBadInput covers issue point 8: clear messages and non-zero exits.
func TestBadInput(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	base := c.baseEnv()
	if r := runHac(t, base, "", nil, "smi"); r.code != 1 || !strings.Contains(r.stderr, "no hac server configured: run hac serve --dev or set HAC_ADDR/HAC_TOKEN") {
		t.Errorf("missing config: %+v", r)
	}
	bad := c.apiEnv("hacu_WRONG")
	if r := runHac(t, bad, "", nil, "smi"); r.code != 1 || !strings.Contains(r.stderr, "the token is missing, wrong or revoked") {
		t.Errorf("wrong token: %+v", r)
	}
	down := append(c.baseEnv(), "HAC_ADDR=https://127.0.0.1:1", "HAC_CA_PIN="+c.pin, "HAC_TOKEN=x")
	if r := runHac(t, down, "", nil, "run", "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "cannot reach the hac control plane") {
		t.Errorf("control plane down: %+v", r)
	}
	if r := c.hac(nil, "", "smi"); r.code != 1 || !strings.Contains(r.stderr, "no server named") {
		t.Errorf("user token without a server: %+v", r)
	}
	if r := c.hac(c.userEnv("nope"), "", "smi"); r.code != 1 || !strings.Contains(r.stderr, "no such server") {
		t.Errorf("unknown server: %+v", r)
	}
	if r := c.hac(nil, "", "server", "register", "Bad_Name"); r.code != 1 || !strings.Contains(r.stderr, "lower-case letters") {
		t.Errorf("bad server name: %+v", r)
	}
	if r := c.hac(nil, "", "server", "register", "ok1", "--model", "tiny.1gb"); r.code != 1 || !strings.Contains(r.stderr, "unknown accelerator model") {
		t.Errorf("bad model: %+v", r)
	}
	c.register("dup", "")
	if r := c.hac(nil, "", "server", "register", "dup"); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("duplicate: %+v", r)
	}
	// A server token may not use the operator's listings.
	tok := c.register("web1", "")
	if r := runHac(t, c.serverEnv(tok), "", nil, "nodes"); r.code != 1 || !strings.Contains(r.stderr, "may not") {
		t.Errorf("server token listing nodes: %+v", r)
	}
	if r := c.hac(nil, "", "jobs", "-o", "xml"); r.code != 2 {
		t.Errorf("-o xml: %+v", r)
	}
	// The control plane is still healthy after all of that.
	if r := c.hac(c.userEnv("web1"), "", "smi"); r.code != 0 {
		t.Errorf("smi after bad input: %+v", r)
	}
}

// TestTTY covers SPEC A3's terminal: the program sees a TTY of the
// client's size, window resizes follow, and a large upload shows a progress
// bar.
func TestTTY(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	tok := c.register("web1", "")
	dir := workdir(t, map[string]string{"big.bin": strings.Repeat("x", 20<<20)})
	cmd := exec.Command(hacBin, "run", "--", "sh", "-c", "tty >/dev/null && echo is-a-tty; while :; do stty size; read x || break; [ \"$x\" = q ] && break; done")
	cmd.Env, cmd.Dir = c.serverEnv(tok), dir
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 31, Cols: 97})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out lockedBuffer
	go io.Copy(&out, ptmx)
	eventually(t, 60*time.Second, "the first size", func() bool { return strings.Contains(out.String(), "31 97") })
	pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120})
	eventually(t, 20*time.Second, "the new size", func() bool {
		ptmx.Write([]byte("\r"))
		time.Sleep(50 * time.Millisecond) // let the answer arrive before asking again
		return strings.Contains(out.String(), "40 120")
	})
	ptmx.Write([]byte("q\r"))
	cmd.Wait()
	got := out.String()
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(got, "is-a-tty") {
		t.Fatalf("exit %d, output %q", code, got)
	}
	if !strings.Contains(got, "Uploading the workspace") {
		t.Errorf("no progress bar for a 20 MiB upload: %q", got)
	}
}

// TestServeDev covers the README's first command: hac serve --dev writes
// the client config, and hac run works with no further step.
func TestServeDev(t *testing.T) {
	home := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	p := start(t, env, home, nil, "serve", "--dev", "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0", "--gpus", "fake:2x80GiB")
	eventually(t, 30*time.Second, "hac serve --dev to be ready", func() bool { return strings.Contains(p.stdout.String(), "Stop with Ctrl+C.") })
	if _, err := os.Stat(filepath.Join(home, ".config", "hac", "config")); err != nil {
		t.Fatalf("no client config: %v", err)
	}
	if r := runHac(t, env, "", nil, "smi"); r.code != 0 || !strings.Contains(r.stdout, "small.16gb") {
		t.Fatalf("smi after serve --dev: %+v", r)
	}
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "echo", "hello from the pool"); r.code != 0 || r.stdout != "hello from the pool\n" {
		t.Fatalf("run after serve --dev: %+v", r)
	}
	if r := runHac(t, env, "", nil, "nodes"); !strings.Contains(r.stdout, "dev-node") {
		t.Fatalf("nodes: %+v", r)
	}
	// hac server register works from the dev config.
	if r := runHac(t, env, "", nil, "server", "register", "laptop"); r.code != 0 || !strings.Contains(r.stdout, "hacs_") {
		t.Fatalf("register from dev config: %+v", r)
	}
}

// TestMemoryWatchdog covers SPEC A9 on simulated GPUs: a program's GPU
// memory shows in hac smi, and a program over its model's memory is ended
// with a clear message. (Programs "allocate" on fake GPUs by writing the
// MiB they hold to $HAC_FAKE_GPU_DIR/PID, as CUDA allocations show in
// nvidia-smi.)
func TestMemoryWatchdog(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", "small.16gb"))
	p, id := startRun(t, c, env, `echo 320 > $HAC_FAKE_GPU_DIR/$$; `+holdScript)
	eventually(t, 20*time.Second, "smi to show the program's memory", func() bool {
		return strings.Contains(runHac(t, env, "", nil, "smi").stdout, "|  320 MiB       |  16384 MiB     |")
	})
	stopHolder(t, c, "node1", id)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	r := runHac(t, env, workdir(t, nil), nil, "run", "--", "sh", "-c", `echo 20000 > $HAC_FAKE_GPU_DIR/$$; sleep 300`)
	want := "[error] HAC AI Accelerator memory not enough: the program used 20000 MiB, more than the 16384 MiB of its accelerator model"
	if r.code != 137 || !strings.Contains(r.stderr, want) {
		t.Fatalf("over the limit: %+v", r)
	}
}
