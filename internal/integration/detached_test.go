package integration

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDetachedJob covers SPEC A11's detached jobs end to end, with a
// server's own token: hac run -d prints the job id and leaves; the job
// outlives its client's lease; hac logs shows stdout and stderr apart,
// hac logs -f follows, hac attach follows until the end and exits with
// the program's code; hac fetch brings the files back into the folder the
// job was started from, while it runs and after; hac cancel --grace gives
// a program that traps SIGTERM its time, sends SIGTERM to each of its
// processes (one in a session of its own too), and ends the job canceled.
func TestDetachedJob(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB") // lease TTL 3 s
	env := c.serverEnv(c.register("web1", ""))
	dir := workdir(t, map[string]string{"keep.txt": "mine\n", "data.txt": "v1\n"})
	r := runHac(t, env, dir, nil, "run", "-d", "--", "sh", "-c",
		// A child in a session of its own gets hac cancel's SIGTERM too.
		`setsid sh -c 'trap "echo child-term > child.txt; exit 0" TERM; while :; do sleep 0.1; done' & `+
			`trap 'echo got-term; echo term > term.txt; wait; exit 3' TERM; echo oops >&2; echo v2 > data.txt; grep -c volatile /proc/self/mountinfo > volatile.txt; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done`)
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || id == "" || !strings.Contains(r.stderr, "hac logs -f "+id) {
		t.Fatalf("hac run -d: %+v", r)
	}
	eventually(t, 30*time.Second, "the detached program's output", func() bool {
		r := runHac(t, env, "", nil, "logs", id)
		return strings.Contains(r.stdout, "tick 3") && strings.Contains(r.stderr, "oops") && !strings.Contains(r.stdout, "oops")
	})
	time.Sleep(5 * time.Second) // more than a lease: no client renews it
	if j := c.job(id); j.State != "running" {
		t.Fatalf("the detached job after its client left: %+v", j)
	}
	follow := start(t, env, "", nil, "logs", "-f", id)
	attach := start(t, env, "", nil, "attach", id)
	eventually(t, 10*time.Second, "hac attach to follow", func() bool { return strings.Contains(attach.stdout.String(), "tick") })

	// Fetch from elsewhere while it runs: the files go where it started.
	if r := runHac(t, env, t.TempDir(), nil, "fetch", id); r.code != 0 || !strings.Contains(r.stderr, "written into "+dir) {
		t.Fatalf("hac fetch while running: %+v", r)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "data.txt")); string(got) != "v2\n" {
		t.Errorf("data.txt after the fetch = %q", got)
	}
	// Its workspace is its record: a program's fsync holds there.
	if got, _ := os.ReadFile(filepath.Join(dir, "volatile.txt")); string(got) != "0\n" {
		t.Errorf("a detached job's workspace is mounted volatile (%q mounts)", got)
	}

	r = runHac(t, env, "", nil, "cancel", "--grace", "20s", id)
	if r.code != 0 || !strings.Contains(r.stderr, "ended: canceled, exit code 3") {
		t.Fatalf("hac cancel --grace 20s: %+v", r)
	}
	if code := attach.exitCode(); code != 3 || !strings.Contains(attach.stdout.String(), "got-term") {
		t.Errorf("hac attach at the end: exit %d\n%s", code, attach.stderr.String())
	}
	if code := follow.exitCode(); code != 0 || !strings.Contains(follow.stdout.String(), "got-term") {
		t.Errorf("hac logs -f at the end: exit %d", code)
	}
	if r := runHac(t, env, "", nil, "fetch", id); r.code != 0 {
		t.Fatalf("hac fetch after the end: %+v", r)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "term.txt")); string(got) != "term\n" {
		t.Errorf("term.txt after the end = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "child.txt")); string(got) != "child-term\n" {
		t.Errorf("child.txt after the end = %q: the child in its own session did not get SIGTERM", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "keep.txt")); string(got) != "mine\n" {
		t.Errorf("keep.txt = %q", got)
	}

	// Bad input gets a clear error.
	bob := c.user("bob")
	for _, bad := range []struct {
		env  []string
		args []string
		want string
	}{
		{env, []string{"attach", id}, "has ended (canceled, exit 3)"},
		{env, []string{"logs", "99999"}, "there is no job 99999"},
		{env, []string{"logs", "x1"}, "not a positive number"},
		{bob, []string{"logs", id}, "there is no job " + id},
		{bob, []string{"cancel", id}, "there is no job " + id},
		{bob, []string{"attach", id}, "there is no job " + id},
		{env, []string{"fetch", id, filepath.Join(dir, "gone")}, "is gone"},
		{env, []string{"cancel", "--grace", "-1s", id}, "give 0s to 1h"},
		{env, []string{"cancel", "--grace", "100h", id}, "give 0s to 1h"},
		{env, []string{"cancel", id}, "has already ended"},
	} {
		r := runHac(t, bad.env, "", nil, bad.args...)
		if r.code == 0 || !strings.Contains(r.stderr, bad.want) {
			t.Errorf("hac %s: exit %d, want an error with %q:\n%s", strings.Join(bad.args, " "), r.code, bad.want, r.stderr)
		}
	}
	// An attached run's output is kept too; its files came back already.
	if r := runHac(t, env, t.TempDir(), nil, "run", "--", "sh", "-c", "echo attached-out; echo attached-err >&2"); r.code != 0 {
		t.Fatalf("hac run: %+v", r)
	}
	attached := c.jobs()[0].ID
	eventually(t, 10*time.Second, "an attached run's output", func() bool {
		r := runHac(t, env, "", nil, "logs", attached)
		return r.code == 0 && r.stdout == "attached-out\n" && r.stderr == "attached-err\n"
	})
	if r := runHac(t, env, "", nil, "fetch", attached, t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, "ran attached") {
		t.Errorf("hac fetch of an attached run: %+v", r)
	}
}

// TestDetachedInteractive: hac run -d -i keeps the program's standard
// input open; hac attach passes what it reads to it, and its end (Ctrl+D,
// the end of a pipe) ends the program's input. An attacher that comes and
// goes with --no-stdin, or with /dev/null as its input, passes nothing and
// ends nothing; a job without -i reads an empty input, and its attachers
// are told they cannot type into it.
func TestDetachedInteractive(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	r := runHac(t, env, t.TempDir(), nil, "run", "-d", "-i", "--", "sh", "-c",
		`echo ready; read a; echo got-$a; read b; echo got-$b; read c || echo input-ended; exit 5`)
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 {
		t.Fatalf("hac run -d -i: %+v", r)
	}
	quiet := start(t, env, "", strings.NewReader("not-for-it\n"), "attach", "--no-stdin", id)
	eventually(t, 30*time.Second, "the first attacher", func() bool { return strings.Contains(quiet.stdout.String(), "ready") })
	quiet.cmd.Process.Signal(syscall.SIGTERM) // leaves; the job runs on
	if code := quiet.exitCode(); code != 0 {
		t.Fatalf("hac attach --no-stdin after SIGTERM: exit %d\n%s", code, quiet.stderr.String())
	}
	// Under cron or systemd (input /dev/null): its input is not read, so
	// its end does not end the program's.
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	cron := start(t, env, "", devNull, "attach", id)
	eventually(t, 30*time.Second, "the attacher from cron", func() bool {
		return strings.Contains(cron.stderr.String(), "Attached to job "+id+": Ctrl+C")
	})
	cron.cmd.Process.Signal(syscall.SIGTERM)
	cron.exitCode()
	inR, inW := io.Pipe()
	attach := start(t, env, "", inR, "attach", id)
	eventually(t, 30*time.Second, "hac attach to take input", func() bool {
		return strings.Contains(attach.stderr.String(), "what you type goes to its program")
	})
	io.WriteString(inW, "one\n")
	eventually(t, 10*time.Second, "the program to read its input", func() bool { return strings.Contains(attach.stdout.String(), "got-one") })
	io.WriteString(inW, "two\n")
	inW.Close() // the input's end
	if code := attach.exitCode(); code != 5 {
		t.Fatalf("hac attach: exit %d\nstdout %s\nstderr %s", code, attach.stdout.String(), attach.stderr.String())
	}
	out := attach.stdout.String()
	if !strings.Contains(out, "got-two") || !strings.Contains(out, "input-ended") || strings.Contains(out, "not-for-it") {
		t.Fatalf("the program's output: %q", out)
	}

	// Without -i: an empty input, and no typing into it.
	r = runHac(t, env, t.TempDir(), nil, "run", "-d", "--", "sh", "-c", `read a || echo empty-input; sleep 3022`)
	plain := strings.TrimSpace(r.stdout)
	p := start(t, env, "", strings.NewReader("x\n"), "attach", plain)
	eventually(t, 30*time.Second, "the attacher of a job without -i", func() bool {
		return strings.Contains(p.stdout.String(), "empty-input") && strings.Contains(p.stderr.String(), "Attached to job "+plain+": Ctrl+C")
	})
	runHac(t, env, "", nil, "cancel", plain)
	p.exitCode()
	if r := runHac(t, env, t.TempDir(), nil, "run", "-i", "--", "true"); r.code != 2 || !strings.Contains(r.stderr, "hac run -d -i") {
		t.Errorf("hac run -i without -d: %+v", r)
	}
}

// TestDetachedJobNodeLost: a detached job whose node goes silent ends
// lost, as an attached one does.
func TestDetachedJobNodeLost(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	r := runHac(t, env, t.TempDir(), nil, "run", "-d", "--", "sleep", "3021")
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 {
		t.Fatalf("hac run -d: %+v", r)
	}
	c.agents[0].cmd.Process.Kill()
	eventually(t, 30*time.Second, "the job to end lost", func() bool { return c.job(id).State == "lost" })
	if j := c.job(id); !strings.Contains(j.EndReason, "node lost") {
		t.Errorf("end reason %q", j.EndReason)
	}
}

// TestCancelSurvivesRestart: hac cancel's order is kept by the control
// plane, so that its node hears it even when the control plane restarted
// before the node's next heartbeat.
func TestCancelSurvivesRestart(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	r := runHac(t, env, t.TempDir(), nil, "run", "-d", "--", "sh", "-c", `trap 'exit 5' TERM; while :; do sleep 0.1; done`)
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 {
		t.Fatalf("hac run -d: %+v", r)
	}
	agent := c.agents[0].cmd.Process
	agent.Signal(syscall.SIGSTOP) // it hears nothing until the restart
	r = runHac(t, env, "", nil, "cancel", "--no-wait", "--grace", "30s", id)
	c.restartServe()
	agent.Signal(syscall.SIGCONT)
	if r.code != 0 {
		t.Fatalf("hac cancel --no-wait: %+v", r)
	}
	eventually(t, 30*time.Second, "the job to end", func() bool { return c.job(id).State != "running" })
	if j := c.job(id); j.State != "canceled" || j.ExitCode != 5 || !strings.Contains(j.EndReason, "hac cancel") {
		t.Fatalf("after the restart the job ended %+v", j)
	}
}
