package integration

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hac-project/hac/internal/apiclient"
)

// TestHealthAndMetrics covers issue point 2's /healthz and /metrics.
func TestHealthAndMetrics(t *testing.T) {
	c := newCluster(t, "fake:2x80GiB")
	get := func(path string) string {
		req, _ := http.NewRequest("GET", c.addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+c.creds.AdminToken) // /metrics is the operators'
		resp, err := apiclient.New(c.pin).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b)
	}
	if got := get("/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
	m := get("/metrics")
	for _, want := range []string{"hac_nodes_ready 1", "hac_queue_length 0", "hac_gpu_memory_allocated_mib 0"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
}

// TestControlPlaneRestart: a running program survives a restart of hac
// serve (its lease is reloaded), and the store keeps every record.
func TestControlPlaneRestart(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	p, id := startRun(t, c, env, holdScript)
	c.restartServe()
	// Longer than a lease: renewals must reach the new process.
	time.Sleep(4 * time.Second) // the behaviour under test is what happens over time
	if j := c.job(id); j.State != "running" {
		t.Fatalf("job after restart: %+v", j)
	}
	stopHolder(t, c, "node1", id)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	eventually(t, 10*time.Second, "the job to complete", func() bool { return c.job(id).State == "completed" })
}

// TestNodeLoss covers P1: a node that stops heartbeating is declared lost,
// its GPUs leave the pool, and when its agent comes back it kills what the
// dead agent left and rejoins.
func TestNodeLoss(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	p, _ := startRun(t, c, env, `: node-loss; `+holdScript)
	pid := nodePid(t, "sh -c : node-loss;")
	c.agents[0].cmd.Process.Kill()
	<-c.agents[0].done
	if code := p.exitCode(); code != 1 || !strings.Contains(p.stderr.String(), "lost the connection to HAC AI Accelerator on node1") {
		t.Fatalf("client after node death: exit %d, %s", code, p.stderr.String())
	}
	eventually(t, 20*time.Second, "the node to be declared lost", func() bool {
		return regexp.MustCompile(`(?m)^node1\s+lost`).MatchString(c.hac(nil, "", "nodes").stdout)
	})
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--wait", "1s", "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "more than the whole pool has now") {
		t.Fatalf("run with no node: %+v", r)
	}
	if !processAlive(pid) {
		t.Log("the program died with its agent")
	}
	c.addAgent("node1", "fake:1x80GiB")
	eventually(t, 10*time.Second, "the restarted agent to kill the old program", func() bool { return !processAlive(pid) })
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "echo", "back"); r.code != 0 || r.stdout != "back\n" {
		t.Fatalf("run after the node came back: %+v", r)
	}
}
