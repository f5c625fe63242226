package controlplane

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/sched"
	"github.com/hac-project/hac/internal/store"
)

// userServer makes a user (unless it exists) and a server of theirs.
func userServer(t *testing.T, s *Server, user, server string) store.Server {
	t.Helper()
	ctx := t.Context()
	var u store.User
	err := s.store.Update(ctx, func(tx *store.Tx) (err error) {
		if u, err = tx.UserByName(user); err == nil {
			return nil
		}
		if _, err = tx.CreateUser(user, false, s.cfg.Now()); err != nil {
			return err
		}
		u, err = tx.UserByName(user)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := s.createServer(ctx, u, server, "small.16gb", "")
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestServersOfTwoUsersWithOneName: two users may name their servers
// alike; one's running job does not make the other's wait as if its own
// accelerator were busy (the scheduler once told servers apart by name).
func TestServersOfTwoUsersWithOneName(t *testing.T) {
	_, _, s := testPlane(t, store.Normal, 1, 0)
	alice, bob := userServer(t, s, "alice", "train"), userServer(t, s, "bob", "train")
	a, err := s.broker.submit(alice, 16384, 0, "a", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.broker.submit(bob, 16384, 0, "b", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range []*jobState{a, b} {
		if cur, _ := s.broker.job(j.ID); cur.State != store.JobRunning {
			p, _ := s.broker.placeOf(j.ID)
			t.Errorf("job %d (%s) is %s, waiting %+v; the pool has room for both", j.ID, cur.userName, cur.State, p.wait)
		}
	}
}

// TestQueuePlaces: through the broker, waiting jobs learn their reason
// and place, the holder of a busy accelerator is named, and places move
// up as jobs start and leave, with the indexes in step with the jobs.
func TestQueuePlaces(t *testing.T) {
	_, _, s := testPlane(t, store.Normal, 1, 0) // one 80 GiB GPU: five 16 GiB shares
	var servers []store.Server
	for i := 0; i < 8; i++ {
		servers = append(servers, userServer(t, s, fmt.Sprintf("u%d", i%3), fmt.Sprintf("s%d", i)))
	}
	var jobs []*jobState
	for _, srv := range servers {
		j, err := s.broker.submit(srv, 16384, 0, "x", 0, false)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	second, err := s.broker.submit(servers[0], 16384, 0, "again", 0, false) // waits for s0's own job
	if err != nil {
		t.Fatal(err)
	}
	check := func(id int64, reason sched.Reason, pos, waiting int) {
		t.Helper()
		p, ok := s.broker.placeOf(id)
		if !ok || p.wait.Reason != reason || p.wait.Position != pos || p.waiting != waiting {
			t.Fatalf("job %d: %+v (ok %v), want reason %d position %d of %d", id, p, ok, reason, pos, waiting)
		}
	}
	check(jobs[5].ID, sched.PoolFull, 1, 3)
	check(jobs[7].ID, sched.PoolFull, 3, 3)
	check(second.ID, sched.Busy, 0, 0)
	if p, _ := s.broker.placeOf(second.ID); p.holder == nil || p.holder.ID != jobs[0].ID {
		t.Fatalf("the busy job's holder: %+v, want job %d", p.holder, jobs[0].ID)
	}
	// Job 6 leaves the line; job 1 ends, so job 5 starts and 7 moves up.
	if ok, err := s.broker.cancelQueued(jobs[6].ID, "canceled"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := s.broker.end(jobs[1].ID, store.JobCompleted, sql.NullInt64{Valid: true}, "", ""); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if cur, _ := s.broker.job(jobs[5].ID); cur.State != store.JobRunning {
		t.Fatalf("job 5 is %s after a share freed", cur.State)
	}
	check(jobs[7].ID, sched.PoolFull, 1, 1)
	// s0's first job ends: its second competes for the pool, behind job 7.
	if _, err := s.broker.end(jobs[0].ID, store.JobCompleted, sql.NullInt64{Valid: true}, "", ""); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.broker.job(jobs[7].ID); cur.State != store.JobRunning {
		t.Fatalf("job 7 is %s after a share freed", cur.State)
	}
	check(second.ID, sched.PoolFull, 1, 1)

	b := s.broker
	b.mu.Lock()
	defer b.mu.Unlock()
	waiting := map[int64]int{}
	for _, j := range b.jobs {
		if j.State == store.JobQueued {
			waiting[j.UserID]++
		}
	}
	if fmt.Sprint(waiting) != fmt.Sprint(b.waitingOf) || b.queue.Len() != 1 || len(b.running) != 5 {
		t.Fatalf("indexes: waitingOf %v (jobs say %v), queue %d, running %d", b.waitingOf, waiting, b.queue.Len(), len(b.running))
	}
}

// TestHeartbeatsDoNotWaitForTheQueue: a heartbeat and a lease renewal are
// answered while the scheduling lock is held (submits and ends hold it
// through their durable commits), so that a busy queue never makes a
// healthy node or client look gone.
func TestHeartbeatsDoNotWaitForTheQueue(t *testing.T) {
	_, _, s := testPlane(t, store.Normal, 1, 0)
	srv := userServer(t, s, "alice", "a")
	j, err := s.broker.submit(srv, 16384, 0, "x", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	acc := acceleratorService{s}
	as := func(serverID int64) context.Context {
		return context.WithValue(t.Context(), principalKey{}, principal{kind: store.ServerToken, serverID: serverID})
	}
	b := s.broker
	b.mu.Lock()
	defer b.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		beat := b.heartbeat("node1", map[int64]jobReport{j.ID: {pid: 42, usedMiB: 7}, 999: {}})
		stop, reregister := beat.stop, beat.reregister
		if reregister || len(stop) != 1 || stop[0] != 999 {
			done <- fmt.Errorf("heartbeat: stop %v, reregister %v; want job 999 stopped", stop, reregister)
			return
		}
		renew := connect.NewRequest(&hacv1.RenewLeaseRequest{JobId: fmt.Sprint(j.ID)})
		if _, err := acc.RenewLease(as(srv.ID+1), renew); connect.CodeOf(err) != connect.CodeNotFound {
			done <- fmt.Errorf("another server renewed the job's lease: %v", err)
			return
		}
		_, err := acc.RenewLease(as(srv.ID), renew)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a heartbeat waited for the scheduling lock")
	}
	if c := b.copyLocked(b.jobs[j.ID]); c.pid != 42 || c.usedMiB != 7 {
		t.Fatalf("the heartbeat's report: pid %d, used %d MiB", c.pid, c.usedMiB)
	}
}

// TestLostNodeGetsNoNewJobs: the jobs of a node that is lost end, and the
// memory they free there is not granted to the next waiting job: it waits
// for a node that is alive.
func TestLostNodeGetsNoNewJobs(t *testing.T) {
	_, _, s := testPool(t, store.Normal, 2, 1, 0) // two nodes of one 80 GiB GPU: five shares each
	for i := 0; i < 10; i++ {
		if _, err := s.broker.submit(userServer(t, s, "alice", fmt.Sprintf("s%d", i)), 16384, 0, "x", 0, false); err != nil {
			t.Fatal(err)
		}
	}
	w, err := s.broker.submit(userServer(t, s, "bob", "w"), 16384, 0, "w", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	b := s.broker
	b.mu.Lock()
	err = b.loseNodeLocked("node1", "test")
	b.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := b.job(w.ID)
	if cur.State != store.JobQueued || cur.onNode("node1") {
		t.Fatalf("the waiting job after node1 was lost: %s on %v", cur.State, cur.Placements)
	}
}

// TestFailedCommitReconciles fails a commit while a release and the grant
// it makes, and the cancel of a waiting job, are queued behind it: no
// client hears of them, memory goes back to what the store holds (the
// first job running, the others waiting, each the same jobState its
// client holds), and the lost release and cancel are queued again a
// moment later, which grants the second job in its turn.
func TestFailedCommitReconciles(t *testing.T) {
	_, _, s := testPlane(t, store.Normal, 1, 0)
	ctx := t.Context()
	whole := int64(80 * 1024)
	var jobs []*jobState
	for _, name := range []string{"a", "b", "c"} {
		j, err := s.broker.submit(userServer(t, s, name, name), whole, 0, name, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	a, b, c := jobs[0], jobs[1], jobs[2]
	br := s.broker
	br.mu.Lock()
	failing := br.queueLocked(func(*store.Tx) error { return errors.New("the disk is on fire") }, nil)
	end := br.endLocked(a.ID, store.JobCompleted, sql.NullInt64{Valid: true}, "", "")
	c.endErr = fmt.Errorf("%w: canceled by c", ErrCanceled)
	cancel := br.endLocked(c.ID, store.JobCanceled, sql.NullInt64{}, "canceled by c", "")
	if cur := br.copyLocked(b); cur.State != store.JobRunning || cur.granted {
		t.Errorf("before the commit, b is %s (granted %v): want running in memory only", cur.State, cur.granted)
	}
	br.mu.Unlock()
	if err := br.settle(failing); !errors.Is(err, errNotRecorded) {
		t.Errorf("the failing change: %v", err)
	}
	for _, ch := range []*change{end, cancel} {
		if err := br.settle(ch); !errors.Is(err, errNotRecorded) || !errors.Is(err, store.ErrNotWritten) {
			t.Errorf("a change behind it: %v", err)
		}
	}
	for _, w := range []struct {
		j     *jobState
		state store.JobState
	}{{a, store.JobRunning}, {b, store.JobQueued}, {c, store.JobQueued}} {
		cur := br.published(w.j)
		if live, _ := br.job(w.j.ID); cur.State != w.state || cur.ended || cur.granted != (w.state == store.JobRunning) || live.Command != w.j.Command {
			t.Errorf("job %s: %s (granted %v, ended %v), want %s as stored, the same jobState", cur.Command, cur.State, cur.granted, cur.ended, w.state)
		}
	}
	// Memory agrees with the store.
	br.mu.Lock()
	warm := br.snapshotLocked().Clone()
	br.snap = nil
	cold := br.snapshotLocked()
	br.mu.Unlock()
	if !reflect.DeepEqual(warm.Nodes, cold.Nodes) {
		t.Errorf("snapshot after reconciling:\n%+v\nwant %+v", warm.Nodes, cold.Nodes)
	}
	// The lost release and cancel come back by themselves.
	deadline := time.Now().Add(10 * time.Second)
	for !(br.published(a).ended && br.published(c).ended && br.published(b).granted) {
		if time.Now().After(deadline) {
			t.Fatalf("after the retry: a ended %v, c ended %v, b granted %v", br.published(a).ended, br.published(c).ended, br.published(b).granted)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := br.published(c).endErr; !errors.Is(err, ErrCanceled) {
		t.Errorf("c's client is told %v, want its cancel", err)
	}
	var state store.JobState
	s.store.View(ctx, func(tx *store.Tx) error {
		js, err := tx.Jobs(0, nil, 10)
		for _, j := range js {
			if j.ID == a.ID {
				state = j.State
			}
		}
		return err
	})
	if state != store.JobCompleted {
		t.Errorf("a is %q in the store, want completed", state)
	}
}
