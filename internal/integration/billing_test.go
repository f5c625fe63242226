package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestBilling covers SPEC P4 through the real binaries: an admin sets a
// price, runs that exit 0, exit 3 and kill -9 of the client are billed for
// the time each held its GPU (within the second the issue allows), the
// statement comes out the same twice, and a server's token reaches no
// billing.
func TestBilling(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	if r := c.hac(nil, "", "price", "set", "model", "small.16gb", "3.60"); r.code != 0 {
		t.Fatalf("price set: %+v", r)
	}
	for _, r := range []result{runHac(t, env, "", nil, "price", "set", "model", "small.16gb", "0"), runHac(t, env, "", nil, "usage")} {
		if r.code == 0 || !strings.Contains(r.stderr, "may not") {
			t.Errorf("a server token's billing call: %+v", r)
		}
	}
	time.Sleep(time.Second) // the price takes effect on the next whole second
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "sleep", "1"); r.code != 0 {
		t.Fatalf("run: %+v", r)
	}
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("run: %+v", r)
	}
	p, id := startRun(t, c, env, `echo ready; sleep 3021`)
	p.cmd.Process.Kill()
	eventually(t, 20*time.Second, "the job to end after kill -9", func() bool { return c.job(id).State != "running" })

	var jobs struct {
		Jobs []struct {
			State                string
			AllocatedAt, EndedAt time.Time
		}
	}
	if err := json.Unmarshal([]byte(c.hac(nil, "", "jobs", "-o", "json").stdout), &jobs); err != nil {
		t.Fatal(err)
	}
	var held time.Duration
	for _, j := range jobs.Jobs {
		held += j.EndedAt.Sub(j.AllocatedAt)
	}
	var usage struct {
		Lines []struct {
			HeldMs, FreeMs int64
			Charge         string
		}
		TotalMinor int64
	}
	r := c.hac(nil, "", "usage", "--by", "model", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &usage); err != nil || len(usage.Lines) != 1 {
		t.Fatalf("usage -o json: %v %+v", err, r)
	}
	billed := time.Duration(usage.Lines[0].HeldMs) * time.Millisecond
	if len(jobs.Jobs) != 3 || (billed-held).Abs() > time.Duration(len(jobs.Jobs))*time.Millisecond+time.Second {
		t.Fatalf("billed %v for %d jobs that held %v", billed, len(jobs.Jobs), held)
	}
	if want := (usage.Lines[0].HeldMs + 5_000) / 10_000; usage.TotalMinor != want { // 0.1 cent a second
		t.Errorf("charged %d cents for %v, want %d", usage.TotalMinor, billed, want)
	}
	month := time.Now().UTC().Format("2006-01")
	a, b := c.hac(nil, "", "invoice", month, "-o", "csv"), c.hac(nil, "", "invoice", month, "-o", "csv")
	if a.code != 0 || a.stdout != b.stdout || !strings.Contains(a.stdout, "small.16gb,web1,3.60") {
		t.Fatalf("invoice twice:\n%s\n%s%s", a.stdout, b.stdout, a.stderr)
	}
}
