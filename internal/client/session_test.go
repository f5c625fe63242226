package client_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/agent"
	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/controlplane"
	"github.com/hac-project/hac/internal/gpu"
	"github.com/hac-project/hac/internal/workspace"
)

// plane starts a control plane and one node agent in this process (the
// agent without a sandbox, as hac serve --dev without root) and returns a
// connection as a server's own token.
func plane(t *testing.T) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := controlplane.DefaultConfig()
	cfg.Listen, cfg.DataDir, cfg.Logger = "127.0.0.1:0", t.TempDir(), quiet
	cfg.LeaseTTL, cfg.HeartbeatInterval, cfg.NodeLostAfter = 3*time.Second, 200*time.Millisecond, 2*time.Second
	srv, err := controlplane.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := srv.Bootstrap(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	tok, err := srv.EnsureServer(ctx, creds.AdminUser, "web1")
	if err != nil {
		t.Fatal(err)
	}
	nodeTok, err := srv.EnrollNode(ctx, "node1", "")
	if err != nil {
		t.Fatal(err)
	}
	gpus, _ := gpu.Parse("fake:1x80GiB", "node1")
	ag, err := agent.New(agent.Config{ControlPlane: srv.URL(), CAPin: srv.Pin(), Token: nodeTok, Name: "node1", Listen: "127.0.0.1:0",
		GPUs: gpus, DataDir: t.TempDir(), Logger: quiet, NoSandbox: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.Register(ctx); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan struct{})
	go func() { ag.Run(ctx); close(agentDone) }()
	t.Cleanup(func() { cancel(); <-agentDone; <-done })
	return client.Dial(client.Config{Addr: srv.URL(), CAPin: srv.Pin(), Token: tok})
}

// TestSessionWithoutTheCLI drives a job's whole session through package
// client alone, as the web console will: an attached run with its output,
// exit code and changed files; a detached run, its output, its files and
// its stop.
func TestSessionWithoutTheCLI(t *testing.T) {
	if os.Getenv("XDG_STATE_HOME") == "" {
		t.Setenv("XDG_STATE_HOME", t.TempDir()) // records of detached jobs
	}
	c := plane(t)
	ctx := t.Context()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte("hello\n"), 0o644)
	files, err := workspace.Walk(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := func(detach bool, argv ...string) (*hacv1.Grant, client.ExecResult, string, error) {
		grant, err := c.Allocate(ctx, client.Allocation{Argv: argv, Detach: detach}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := c.Exec(ctx, grant, client.Program{Argv: argv, Dir: dir, Files: files}, client.ExecIO{Stdout: &out, Stderr: &out})
		if !detach {
			code := res.Code
			c.Release(ctx, grant.JobId, &code)
		}
		return grant, res, out.String(), err
	}

	_, res, out, err := run(false, "sh", "-c", "cat in.txt; echo made > out.txt; exit 3")
	if err != nil || res.Code != 3 || out != "hello\n" || len(res.Warnings) != 0 {
		t.Fatalf("attached run: %+v %q %v", res, out, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "out.txt")); string(got) != "made\n" {
		t.Fatalf("out.txt came back as %q", got)
	}

	grant, res, _, err := run(true, "sh", "-c", "echo started; echo v2 > in.txt; exec sleep 3031")
	if err != nil || !res.Detached {
		t.Fatalf("detached run: %+v %v", res, err)
	}
	id := grant.JobId
	deadline := time.Now().Add(20 * time.Second)
	var logs bytes.Buffer
	for !strings.Contains(logs.String(), "started") && time.Now().Before(deadline) {
		logs.Reset()
		if _, err := c.Logs(ctx, id, false, client.Output{Stdout: &logs, Stderr: &logs}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "started") {
		t.Fatalf("logs: %q", logs.String())
	}
	rec, err := client.LoadRecord(c.Addr, id)
	if err != nil || rec.Dir != dir {
		t.Fatalf("the record of job %s: %+v, %v", id, rec, err)
	}
	grace := time.Second
	if _, err := c.Stop(ctx, id, &grace); err != nil {
		t.Fatal(err)
	}
	j, err := c.WaitEnded(ctx, id)
	if err != nil || j.State != "canceled" {
		t.Fatalf("after Stop: %+v, %v", j, err)
	}
	got, err := c.Fetch(ctx, id, dir, rec)
	if err != nil || got.Files != 1 {
		t.Fatalf("fetch: %+v, %v", got, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "in.txt")); string(b) != "v2\n" {
		t.Fatalf("in.txt after the fetch: %q", b)
	}
}
