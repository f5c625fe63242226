package integration

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

const busyWarning = `[warning] HAC AI Accelerator is already in use by another process:
[warning]   (pid: PID) sh -c echo ready; while [ ! -e stop ]; do sleep 0.05; done
[warning] Two or more processes cannot use HAC AI Accelerator at the same time. The program will resume automatically after the process PID terminates...
`

const poolFullWarning = "[warning] Not enough resources are currently available for HAC AI Accelerator. All resources in the system are being used by other users. The program will resume automatically when resources become available...\n"

// holdScript runs until a file named "stop" appears in its work folder.
const holdScript = `echo ready; while [ ! -e stop ]; do sleep 0.05; done`

// stopHolder ends the program started with holdScript on a node.
func stopHolder(t *testing.T, c *cluster, node, jobID string) {
	t.Helper()
	writeIn(t, c, node, jobID, "stop")
}

// TestBusyAcceleratorWaits covers SPEC A5: a second run on the same server
// prints the warning and starts by itself when the first ends.
func TestBusyAcceleratorWaits(t *testing.T) {
	c := newCluster(t, "fake:4x80GiB")
	tok := c.register("web1", "")
	env := c.serverEnv(tok)
	first, id := startRun(t, c, env, holdScript)
	second := start(t, env, workdir(t, nil), nil, "run", "--", "echo", "second ran")
	eventually(t, 20*time.Second, "the busy warning", func() bool { return strings.Contains(second.stderr.String(), "Two or more processes") })
	got := regexp.MustCompile(`pid: [0-9]+\)`).ReplaceAllString(second.stderr.String(), "pid: PID)")
	got = regexp.MustCompile(`process [0-9]+ terminates`).ReplaceAllString(got, "process PID terminates")
	if !strings.Contains(got, busyWarning) {
		t.Fatalf("busy warning:\n%s\nwant:\n%s", got, busyWarning)
	}
	if strings.Contains(second.stdout.String(), "second ran") {
		t.Fatal("the second program ran while the first held the accelerator")
	}
	stopHolder(t, c, "node1", id)
	if code := first.exitCode(); code != 0 {
		t.Fatalf("first exit %d", code)
	}
	if code := second.exitCode(); code != 0 || !strings.Contains(second.stdout.String(), "second ran") {
		t.Fatalf("second: exit %d, stdout %q", code, second.stdout.String())
	}
}

// TestPoolFullQueues covers SPEC A6 and P3: a run that does not fit waits
// with its queue position, --wait gives up with 75, and the queue resumes
// by itself in priority-then-arrival order.
func TestPoolFullQueues(t *testing.T) {
	c := newCluster(t, "fake:2x80GiB")
	big := c.serverEnv(c.register("big", "2xlarge.192gb")) // needs more than the pool: rejected
	holder := c.serverEnv(c.register("holder", "xlarge.96gb"))
	a := c.serverEnv(c.register("a", "xlarge.96gb"))
	b := c.serverEnv(c.register("b", "xlarge.96gb"))

	r := runHac(t, big, "", nil, "run", "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "more than the whole pool has now") {
		t.Fatalf("model larger than the pool: %+v", r)
	}

	// A little history, so that the queue can estimate start times.
	for i := 0; i < 3; i++ {
		if r := runHac(t, a, workdir(t, nil), nil, "run", "--", "true"); r.code != 0 {
			t.Fatalf("history run: %+v", r)
		}
	}
	h, hid := startRun(t, c, holder, holdScript)
	r = runHac(t, a, workdir(t, nil), nil, "run", "--wait", "1s", "--", "true")
	if r.code != 75 || !strings.Contains(r.stderr, poolFullWarning) || !strings.Contains(r.stderr, "Queue position: 1 of 1.") {
		t.Fatalf("--wait: %+v", r)
	}
	qa := start(t, a, workdir(t, nil), nil, "run", "--", "echo", "a ran")
	eventually(t, 20*time.Second, "a to queue", func() bool { return strings.Contains(qa.stderr.String(), "Queue position: 1 of 1.") })
	if !strings.Contains(qa.stderr.String(), "Queue position: 1 of 1. Estimated start: any moment now (from 3 recent runs of this model).") {
		t.Errorf("no start estimate: %s", qa.stderr.String())
	}
	qb := start(t, b, workdir(t, nil), nil, "run", "--", "echo", "b ran")
	eventually(t, 20*time.Second, "b to queue second", func() bool { return strings.Contains(qb.stderr.String(), "Queue position: 2 of 2.") })
	q := c.hac(nil, "", "queue")
	if !regexp.MustCompile(`(?s)\d+\s+running\s+admin/holder .*\n\d+\s+queued\s+admin/a .* resources .*\n\d+\s+queued\s+admin/b .* priority \(1 ahead\) `).MatchString(q.stdout) {
		t.Fatalf("hac queue:\n%s", q.stdout)
	}
	stopHolder(t, c, "node1", hid)
	if code := h.exitCode(); code != 0 {
		t.Fatalf("holder exit %d", code)
	}
	if code := qa.exitCode(); code != 0 || !strings.Contains(qa.stdout.String(), "a ran") {
		t.Fatalf("a: %d %q %q", code, qa.stdout.String(), qa.stderr.String())
	}
	if code := qb.exitCode(); code != 0 || !strings.Contains(qb.stdout.String(), "b ran") {
		t.Fatalf("b: %d %q", code, qb.stdout.String())
	}
	if !strings.Contains(qb.stderr.String(), "Queue position: 1 of 1.") {
		t.Errorf("b's position did not move up: %s", qb.stderr.String())
	}
}

// TestExclusiveGPUs covers P2: concurrent jobs get disjoint whole GPUs, a
// small model gets a share, and the grant never exceeds the pool.
func TestExclusiveGPUs(t *testing.T) {
	c := newCluster(t, "fake:4x80GiB")
	env1 := c.serverEnv(c.register("s1", "xlarge.96gb"))
	env2 := c.serverEnv(c.register("s2", "xlarge.96gb"))
	env3 := c.serverEnv(c.register("s3", "small.16gb"))
	script := `echo "gpus=$CUDA_VISIBLE_DEVICES"; ` + holdScript
	p1, id1 := startRun(t, c, env1, script)
	p2, id2 := startRun(t, c, env2, script)
	gpus := func(p *proc) []string {
		m := regexp.MustCompile(`gpus=(\S+)`).FindStringSubmatch(p.stdout.String())
		return strings.Split(m[1], ",")
	}
	g1, g2 := gpus(p1), gpus(p2)
	if len(g1) != 2 || len(g2) != 2 {
		t.Fatalf("xlarge.96gb on 80 GiB GPUs wants 2 GPUs: %v %v", g1, g2)
	}
	for _, a := range g1 {
		for _, b := range g2 {
			if a == b {
				t.Fatalf("two jobs share GPU %s", a)
			}
		}
	}
	// The pool is full of whole GPUs now: a small model waits.
	r := runHac(t, env3, workdir(t, nil), nil, "run", "--wait", "1s", "--", "true")
	if r.code != 75 {
		t.Fatalf("small model on a full pool: %+v", r)
	}
	stopHolder(t, c, "node1", id1)
	stopHolder(t, c, "node1", id2)
	p1.exitCode()
	p2.exitCode()
	r = runHac(t, env3, workdir(t, nil), nil, "run", "--", "sh", "-c", `echo "gpus=$CUDA_VISIBLE_DEVICES mem=$HAC_ACCELERATOR_MEMORY"`)
	if !regexp.MustCompile(`gpus=GPU-fake-node1-\d mem=16384\n`).MatchString(r.stdout) {
		t.Fatalf("small model: %+v", r)
	}
	j := c.jobs()[0]
	if len(j.Placements) != 1 || j.Placements[0].MemoryMib != 16384 {
		t.Fatalf("small model placement %+v, want a 16384 MiB share of one GPU", j.Placements)
	}
}

// TestQueueCancel covers P3's cancel: a queued job withdrawn with
// hac queue cancel ends its waiting hac run with a clear message.
func TestQueueCancel(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	holder := c.serverEnv(c.register("holder", "large.64gb"))
	waiter := c.serverEnv(c.register("waiter", "large.64gb"))
	h, hid := startRun(t, c, holder, holdScript)
	w := start(t, waiter, workdir(t, nil), nil, "run", "--", "echo", "never")
	eventually(t, 20*time.Second, "the second job to queue", func() bool { return strings.Contains(w.stderr.String(), "Queue position: 1 of 1.") })
	var q struct {
		Jobs []struct{ ID string } `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(c.hac(nil, "", "queue", "-o", "json").stdout), &q); err != nil || len(q.Jobs) != 2 || q.Jobs[0].ID != hid {
		t.Fatalf("queue: %v %+v", err, q)
	}
	if r := c.hac(nil, "", "queue", "cancel", hid); r.code != 1 || !strings.Contains(r.stderr, "is running, not queued: stop it with hac cancel") {
		t.Errorf("cancel a running job: %+v", r)
	}
	if r := c.hac(nil, "", "queue", "cancel", q.Jobs[1].ID); r.code != 0 {
		t.Fatalf("cancel: %+v", r)
	}
	if code := w.exitCode(); code != 1 || !strings.Contains(w.stderr.String(), "was canceled by admin") || strings.Contains(w.stdout.String(), "never") {
		t.Fatalf("the canceled run: exit %d, %s", code, w.stderr.String())
	}
	stopHolder(t, c, "node1", hid)
	h.exitCode()
}
