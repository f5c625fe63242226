package controlplane

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// testClock is a clock a test moves.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) now() time.Time       { return time.Unix(0, c.ns.Load()) }
func (c *testClock) add(d time.Duration)  { c.ns.Add(int64(d)) }
func newTestClock(t time.Time) *testClock { c := &testClock{}; c.ns.Store(t.UnixNano()); return c }
func anyone(*jobState) bool               { return true }
func (b *broker) state(id int64) jobState { j, _ := b.job(id); return j }

// TestDetachedLeaseAndStop: a detached job's lease is kept by its node's
// heartbeats (no client renews it) and runs out when they stop; hac
// cancel's order reaches the node with every heartbeat, a second order
// only ever shortens it, and a job its node does not end in time is
// ended by the control plane.
func TestDetachedLeaseAndStop(t *testing.T) {
	clock := newTestClock(time.Unix(1_000_000, 0))
	_, _, s := testPoolWith(t, store.Normal, 1, 2, 0, func(c *Config) { c.Now = clock.now; c.NodeLostAfter = time.Hour })
	b := s.broker
	srv := userServer(t, s, "alice", "a")
	j, err := b.submit(srv, 16384, 0, "train", 0, true)
	if err != nil || b.state(j.ID).State != store.JobRunning {
		t.Fatalf("submit: %v, %+v", err, b.state(j.ID))
	}
	beat := func() beatAnswer { return b.heartbeat("node1", map[int64]jobReport{j.ID: {pid: 7}}) }
	for range 3 {
		clock.add(b.cfg.LeaseTTL * 2 / 3)
		beat()
		b.expire()
	}
	if got := b.state(j.ID); got.State != store.JobRunning {
		t.Fatalf("a detached job reported by its node lost its lease: %+v", got)
	}

	if _, err := b.stop(j.ID, 20*time.Second, "canceled by alice (hac cancel)", anyone); err != nil {
		t.Fatal(err)
	}
	if o, ok := beat().terminate[j.ID]; !ok || o.grace != 20*time.Second || !strings.Contains(o.reason, "hac cancel") {
		t.Fatalf("the heartbeat's order: %+v, %v", o, ok)
	}
	b.stop(j.ID, time.Hour, "later", anyone) // does not extend
	b.stop(j.ID, 5*time.Second, "sooner", anyone)
	if o := beat().terminate[j.ID]; o.grace != 5*time.Second || o.reason != "sooner" {
		t.Fatalf("after a shorter order: %+v", o)
	}
	for waited := time.Duration(0); waited <= 5*time.Second+stopOverdue; waited += 10 * time.Second {
		clock.add(10 * time.Second) // under a lease at a time: the reaper runs meanwhile
		beat()
	}
	b.expire()
	if _, live := b.job(j.ID); live {
		t.Fatalf("a job past its grace and overdue still runs: %+v", b.state(j.ID))
	}
	row := storedJob(t, s, j.ID)
	if row.State != store.JobCanceled || !strings.Contains(row.EndReason, "did not report the end in time") {
		t.Fatalf("the overdue job ended %s: %s", row.State, row.EndReason)
	}

	// Without heartbeats the lease runs out, as an attached run's does.
	k, err := b.submit(srv, 16384, 0, "train", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	clock.add(b.cfg.LeaseTTL + time.Second)
	b.expire()
	if row := storedJob(t, s, k.ID); row.State != store.JobLost || !strings.Contains(row.EndReason, "nor its node (after) renewed it") {
		t.Fatalf("a detached job nobody reports ended %s: %s", row.State, row.EndReason)
	}
}

// TestSuspendedLeaseFromTheNode: a job its client suspended (Ctrl+Z) keeps
// its suspended lease by its node's word, which a restarted control plane
// hears too (it forgot the client's request), and only for as long as the
// suspended lease: counted from the suspension, not from the restart.
func TestSuspendedLeaseFromTheNode(t *testing.T) {
	clock := newTestClock(time.Unix(1_000_000, 0))
	_, _, s := testPoolWith(t, store.Normal, 1, 2, 0, func(c *Config) {
		c.Now, c.NodeLostAfter, c.SuspendedLease = clock.now, time.Hour, 10*time.Minute
	})
	b := s.broker
	j, err := b.submit(userServer(t, s, "alice", "a"), 16384, 0, "train", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	suspended := time.Minute // when the control plane came back
	for suspended < 10*time.Minute-b.cfg.LeaseTTL {
		b.heartbeat("node1", map[int64]jobReport{j.ID: {pid: 7, suspended: suspended}})
		clock.add(b.cfg.LeaseTTL / 2)
		suspended += b.cfg.LeaseTTL / 2
		b.expire()
		if got := b.state(j.ID); got.State != store.JobRunning {
			t.Fatalf("suspended %v of 10m: the job ended %+v", suspended, got)
		}
	}
	for range 4 {
		b.heartbeat("node1", map[int64]jobReport{j.ID: {pid: 7, suspended: suspended}})
		clock.add(b.cfg.LeaseTTL / 2)
		suspended += b.cfg.LeaseTTL / 2
		b.expire()
	}
	if row := storedJob(t, s, j.ID); row.State != store.JobLost {
		t.Fatalf("a job suspended past its suspended lease is %s", row.State)
	}
	// A running job's report extends nothing: its client renews.
	k, err := b.submit(userServer(t, s, "alice", "b"), 16384, 0, "train", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		b.heartbeat("node1", map[int64]jobReport{k.ID: {pid: 8}})
		clock.add(b.cfg.LeaseTTL / 2)
		b.expire()
	}
	if row := storedJob(t, s, k.ID); row.State != store.JobLost {
		t.Fatalf("an attached job no client renews is %s", row.State)
	}
	// A brief suspension buys no long lease: once the node says the job
	// runs again, its client must renew.
	m, err := b.submit(userServer(t, s, "alice", "c"), 16384, 0, "train", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	b.heartbeat("node1", map[int64]jobReport{m.ID: {pid: 9, suspended: time.Millisecond}})
	for range 4 {
		b.heartbeat("node1", map[int64]jobReport{m.ID: {pid: 9}})
		clock.add(b.cfg.LeaseTTL / 2)
		b.expire()
	}
	if row := storedJob(t, s, m.ID); row.State != store.JobLost {
		t.Fatalf("a job suspended for a moment, then running unrenewed, is %s", row.State)
	}
}

func storedJob(t *testing.T, s *Server, id int64) store.Job {
	t.Helper()
	var j store.Job
	if err := s.store.View(t.Context(), func(tx *store.Tx) error {
		var err error
		j, err = tx.Job(id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return j
}

// TestListJobsFilters: hac jobs' filters, and who sees what: a server
// token its own server's jobs only (even of an admin), a user no one
// else's.
func TestListJobsFilters(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 1, 2)
	srv0, srv1 := serverByToken(t, s, toks[0]), serverByToken(t, s, toks[1])
	a, err := s.broker.submit(srv0, 16384, 0, "a", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	s.broker.end(a.ID, store.JobCompleted, sql.NullInt64{Valid: true}, "program exited", "")
	if _, err := s.broker.submit(srv1, 16384, 0, "b", 0, false); err != nil {
		t.Fatal(err)
	}
	list := func(tok string, req *hacv1.ListJobsRequest) ([]string, error) {
		pool := hacv1connect.NewPoolServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(tok)))
		resp, err := pool.ListJobs(t.Context(), connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		var cmds []string
		for _, j := range resp.Msg.Jobs {
			cmds = append(cmds, j.Command)
		}
		return cmds, nil
	}
	admin := adminToken(t, s)
	for _, c := range []struct {
		tok  string
		req  *hacv1.ListJobsRequest
		want string
	}{
		{toks[0], &hacv1.ListJobsRequest{}, "[a]"},
		{toks[1], &hacv1.ListJobsRequest{}, "[b]"},
		{admin, &hacv1.ListJobsRequest{}, "[b a]"},
		{admin, &hacv1.ListJobsRequest{States: []string{"running"}}, "[b]"},
		{admin, &hacv1.ListJobsRequest{Server: "s0"}, "[a]"},
		{admin, &hacv1.ListJobsRequest{Since: timestamppb.New(time.Now().Add(time.Hour))}, "[]"},
		{admin, &hacv1.ListJobsRequest{User: "admin"}, "[b a]"},
	} {
		got, err := list(c.tok, c.req)
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("ListJobs(%v): %v, %v; want %s", c.req, got, err, c.want)
		}
	}
	for _, c := range []struct {
		tok  string
		req  *hacv1.ListJobsRequest
		want string
	}{
		{admin, &hacv1.ListJobsRequest{States: []string{"done"}}, "use queued, running"},
		{toks[0], &hacv1.ListJobsRequest{User: "admin"}, "only an admin"},
		{toks[0], &hacv1.ListJobsRequest{Server: "s1"}, "acts on s0 only"},
		{admin, &hacv1.ListJobsRequest{User: "nobody"}, "no user"},
	} {
		if _, err := list(c.tok, c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ListJobs(%v): %v; want an error with %q", c.req, err, c.want)
		}
	}
}

func serverByToken(t *testing.T, s *Server, tok string) store.Server {
	t.Helper()
	var srv store.Server
	if err := s.store.View(t.Context(), func(tx *store.Tx) error {
		tk, err := tx.TokenByHash(token.Hash(tok))
		if err != nil {
			return err
		}
		srv, err = tx.ServerByID(tk.ServerID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return srv
}

func adminToken(t *testing.T, s *Server) string {
	t.Helper()
	raw, err := os.ReadFile(s.CredentialsPath())
	var c Credentials
	if err != nil || json.Unmarshal(raw, &c) != nil {
		t.Fatalf("credentials: %v", err)
	}
	return c.AdminToken
}
