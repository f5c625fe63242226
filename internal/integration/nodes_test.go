package integration

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/pki"
)

// agentClient speaks the agent protocol with a credential.
func (c *cluster) agentClient(token string) hacv1connect.AgentServiceClient {
	return hacv1connect.NewAgentServiceClient(apiclient.New(c.pin), c.addr, connect.WithInterceptors(apiclient.Bearer(token)))
}

// TestAttackNodeImpersonation: a node's credential acts as that node only:
// it cannot register under another node's name (which once redirected
// the next user's run), report another node's heartbeat, forge the end of
// another node's job, or claim another node's GPUs; a join token works
// once; a name cannot be enrolled twice.
func TestAttackNodeImpersonation(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB", "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", "large.64gb")) // a whole GPU: one node or the other
	p, id := startRun(t, c, env, holdScript)
	victim := c.job(id).Placements[0].Node
	attacker := map[string]string{"node1": "node2", "node2": "node1"}[victim]
	evil := c.agentClient(c.nodeCredential(attacker))
	ctx := context.Background()
	refused := func(what string, err error) {
		t.Helper()
		if code := connect.CodeOf(err); code != connect.CodePermissionDenied && code != connect.CodeInvalidArgument {
			t.Errorf("%s: %v, want a refusal", what, err)
		}
	}
	_, csr, err := pki.NewRequest()
	if err != nil {
		t.Fatal(err)
	}
	_, err = evil.RegisterNode(ctx, connect.NewRequest(&hacv1.RegisterNodeRequest{ProtocolVersion: hacv1.AgentProtocolVersion,
		Name: victim, Address: "127.0.0.1:1", WorkerCsr: csr, Gpus: []*hacv1.GPU{{Uuid: "GPU-evil", MemoryMib: 81920}}}))
	refused("register under the victim's name", err)
	_, err = evil.Heartbeat(ctx, connect.NewRequest(&hacv1.HeartbeatRequest{Name: victim}))
	refused("the victim's heartbeat", err)
	_, err = evil.JobEnded(ctx, connect.NewRequest(&hacv1.JobEndedRequest{Name: victim, JobId: id, ExitCode: 0}))
	refused("a forged end of the victim's job", err)
	_, err = evil.RegisterNode(ctx, connect.NewRequest(&hacv1.RegisterNodeRequest{ProtocolVersion: hacv1.AgentProtocolVersion,
		Name: attacker, Address: "127.0.0.1:1", WorkerCsr: csr, Gpus: []*hacv1.GPU{{Uuid: "GPU-fake-" + victim + "-0", MemoryMib: 81920}}}))
	refused("claiming the victim's GPU", err)
	if j := c.job(id); j.State != "running" || j.Placements[0].Node != victim {
		t.Fatalf("the victim's job after the attacks: %+v", j)
	}

	// A join token works once, and an enrolled name cannot be enrolled again.
	r := c.hac(nil, "", "node", "add", "node3")
	join := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(join, "hacj_") {
		t.Fatalf("node add: %+v", r)
	}
	if _, err := c.agentClient(join).Join(ctx, connect.NewRequest(&hacv1.JoinRequest{ProtocolVersion: hacv1.AgentProtocolVersion})); err != nil {
		t.Fatalf("join: %v", err)
	}
	_, err = c.agentClient(join).Join(ctx, connect.NewRequest(&hacv1.JoinRequest{ProtocolVersion: hacv1.AgentProtocolVersion}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("a second join with one token: %v", err)
	}
	if r := c.hac(nil, "", "node", "add", victim); r.code == 0 || !strings.Contains(r.stderr, "enrolled already") {
		t.Errorf("enrolling %s twice: %+v", victim, r)
	}
	// Only admins enroll.
	bob := c.tenant("bob", "b1")
	for _, args := range [][]string{{"node", "add", "node9"}, {"node", "drain", victim}, {"node", "remove", victim}} {
		if r := runHac(t, bob, "", nil, args...); r.code == 0 || !strings.Contains(r.stderr, "may not") {
			t.Errorf("another tenant's %v: %+v", args, r)
		}
	}
	// Nor may a user who is not an admin.
	r = c.hac(nil, "", "user", "create", "carol")
	f := strings.Fields(r.stdout)
	carol := c.apiEnv(f[len(f)-1])
	for _, args := range [][]string{{"node", "add", "node9"}, {"node", "drain", victim}, {"node", "remove", victim}} {
		if r := runHac(t, carol, "", nil, args...); r.code == 0 || !strings.Contains(r.stderr, "only an admin") {
			t.Errorf("a non-admin's %v: %+v", args, r)
		}
	}
	stopHolder(t, c, victim, id)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("victim's run: exit %d, %s", code, p.stderr.String())
	}
}

// TestNodeDrainAndRemove covers P1: a drained node takes no new jobs, a
// removed node's credential stops working and its agent stops its jobs
// and exits; no node credential is ever on a command line.
func TestNodeDrainAndRemove(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB", "fake:1x80GiB")
	for _, a := range c.agents {
		for _, arg := range a.cmd.Args {
			if strings.HasPrefix(arg, "hacn_") || strings.HasPrefix(arg, "hacj_") {
				t.Errorf("a credential on the agent's command line: %v", a.cmd.Args)
			}
		}
	}
	if r := c.hac(nil, "", "node", "drain", "node1"); r.code != 0 {
		t.Fatalf("drain: %+v", r)
	}
	if !regexp.MustCompile(`(?m)^node1\s+drained`).MatchString(c.hac(nil, "", "nodes").stdout) {
		t.Errorf("hac nodes does not show node1 drained")
	}
	env := c.serverEnv(c.register("web1", "large.64gb"))
	for i := 0; i < 3; i++ {
		if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "true"); r.code != 0 {
			t.Fatalf("run: %+v", r)
		}
	}
	for _, j := range c.jobs() {
		if j.Placements[0].Node != "node2" {
			t.Errorf("job %s ran on drained %s", j.ID, j.Placements[0].Node)
		}
	}
	// node1 stays drained: the next job lands on node2, which is removed.
	cred := c.nodeCredential("node2")
	p, _ := startRun(t, c, env, `: on-node2; `+holdScript)
	if r := c.hac(nil, "", "node", "remove", "node2"); r.code != 0 {
		t.Fatalf("remove: %+v", r)
	}
	select {
	case <-c.agents[1].done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the removed node's agent runs on: %s", c.agents[1].stderr.String())
	}
	if !strings.Contains(c.agents[1].stderr.String(), "no longer accepts this node's credential") {
		t.Errorf("the removed node's agent said: %s", c.agents[1].stderr.String())
	}
	if code := p.exitCode(); code == 0 {
		t.Errorf("the removed node's job ended with exit 0")
	}
	_, err := c.agentClient(cred).Heartbeat(context.Background(), connect.NewRequest(&hacv1.HeartbeatRequest{Name: "node2"}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("the removed node's credential still works: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(c.dir, "node1", "node-credential.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node1's credential file: %v %v", fi, err)
	}
	if r := c.hac(nil, "", "node", "drain", "node1", "--resume"); r.code != 0 {
		t.Fatalf("resume: %+v", r)
	}
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "echo", "on-node1"); r.stdout != "on-node1\n" {
		t.Fatalf("run after resume: %+v", r)
	}
}
