package controlplane

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hac-project/hac/internal/sched"
	"github.com/hac-project/hac/internal/store"
)

// broker owns the queue and the pool. A change is made in memory under mu
// and queued for the store's group commit in the same order; its clients
// hear of it once it committed (broker_commit.go). Its methods take no
// context: once made in memory, a change is written whatever becomes of
// the request that made it.
type broker struct {
	cfg   Config
	store *store.Store
	log   *slog.Logger
	obs   *observer

	mu sync.Mutex
	// beats guards what heartbeats and lease renewals change, so that they
	// never wait for mu, which submits and ends hold through their commits:
	// nodes' lastSeen, running jobs' lease, pid and usedMiB. The maps nodes
	// and running, and nodes' lost flags, are written holding both mu and
	// beats, so that either lock reads them. Lock order: mu, then beats.
	beats sync.Mutex
	nodes map[string]*nodeState
	jobs  map[int64]*jobState // queued and running jobs only
	// snap is the scheduler's view, kept current by grants and ends so that
	// its index stays warm; nil when nodes changed and it must be rebuilt.
	snap *sched.Snapshot
	// queue is the waiting jobs in service order. Like snap it runs ahead
	// of jobs while a change commits; a failed commit rebuilds both.
	queue *sched.Queue
	// Indexes of jobs, so that no request scans them all: the running job
	// of each server (its waiting ones are the queue's), the running ones,
	// and how many wait by user.
	holders   map[int64]*jobState
	running   map[int64]*jobState
	waitingOf map[int64]int
	// ending are jobs ended in memory whose end has not committed yet: a
	// failed commit puts them back (reconcileLocked).
	ending      map[int64]*jobState
	runningEnds []time.Time // expected ends of running jobs, sorted; nil: stale
	// runTimes are how long recent jobs held the pool, for start-time
	// estimates.
	runTimes runTimes
	// lastID is the highest job id given; the broker numbers jobs, so
	// that a job is whole in memory before its row is written.
	lastID int64
}

type nodeState struct {
	store.Node
	lastSeen time.Time
	lost     bool
}

// jobState is a live job. Fields change under broker.mu, but lease, pid
// and usedMiB of a running job under broker.beats.
type jobState struct {
	store.Job
	serverName string
	userName   string
	// image is the image of a server made by hac, whose jobs run on it
	// with the server's changes (SPEC A7); empty for registered servers.
	image string
	lease time.Time // running jobs: expiry
	// suspendedByNode: the node said the job is suspended (Ctrl+Z), and
	// its lease was held on that word; the next report that it is not
	// takes the lease back to a client's renewal.
	suspendedByNode bool
	// reloaded: loaded as running after a restart, and neither its client
	// (a renewal) nor its node (a heartbeat) has spoken of it since. If its
	// lease runs out so, its end happened while the control plane was
	// down and was not heard: a fault of the control plane's, not charged.
	reloaded bool
	endErr   error // set when the job ended before its grant
	// fault names the infrastructure fault that ended the job (SPEC A10):
	// its run is not charged. Empty for every other end.
	fault   string
	pid     int64 // the program's pid on its first node
	usedMiB int64
	// changed is signalled (without blocking) when the job's grant or end
	// committed; its place in the queue is read when the client is told.
	changed chan struct{}
	// granted and ended: the job's grant or end committed, so that its
	// client may hear of it (State runs ahead while it commits).
	granted, ended bool
	// stopping is hac cancel's order to a running job, under beats: its
	// node hears it with every heartbeat until the job ends.
	stopping *stopOrder
}

// stopOrder asks a running job's program to end: SIGTERM, then SIGKILL
// to its tree once grace passed (hac cancel).
type stopOrder struct {
	since  time.Time
	grace  time.Duration
	reason string
}

// stopOverdue is how long past its grace a stopping job may run before the
// control plane ends it itself (its node gone silent, or deaf to orders):
// its GPUs are then free, and the node kills it on its next heartbeat.
const stopOverdue = 30 * time.Second

// schedJob is the job as the scheduler sees it. Servers are told apart by
// id: two users may name theirs alike.
func (j *jobState) schedJob() sched.Job {
	return sched.Job{ID: j.ID, Server: j.ServerID, Priority: j.Priority, Seq: j.ID, MemoryMiB: j.MemoryMiB}
}

// imageOf is the image a server's jobs run on: a server made by hac's,
// or the one a registered server named; empty: the node's own system.
func imageOf(srv store.Server) string { return srv.Image }

func (j *jobState) notify() {
	select {
	case j.changed <- struct{}{}:
	default:
	}
}

func newBroker(ctx context.Context, cfg Config, st *store.Store, obs *observer) (*broker, error) {
	b := &broker{cfg: cfg, store: st, log: cfg.Logger, obs: obs, nodes: map[string]*nodeState{}, jobs: map[int64]*jobState{},
		holders: map[int64]*jobState{}, running: map[int64]*jobState{}, waitingOf: map[int64]int{}, ending: map[int64]*jobState{}}
	now := cfg.Now()
	err := st.Update(ctx, func(tx *store.Tx) error {
		nodes, err := tx.Nodes()
		if err != nil {
			return err
		}
		for _, n := range nodes {
			b.nodes[n.Name] = &nodeState{Node: n, lastSeen: now, lost: n.State == store.NodeLost}
		}
		if b.lastID, err = tx.LastJobID(); err != nil {
			return err
		}
		// Estimates go by the runs before the restart too.
		done, err := tx.Jobs(0, []store.JobState{store.JobCompleted, store.JobFailed, store.JobCanceled}, maxRunKinds)
		if err != nil {
			return err
		}
		for _, j := range slices.Backward(done) {
			if !j.AllocatedAt.IsZero() && j.EndedAt.After(j.AllocatedAt) {
				b.runTimes.add(j.UserID, j.Model, j.Command, j.EndedAt.Sub(j.AllocatedAt))
			}
		}
		jobs, err := tx.Jobs(0, []store.JobState{store.JobQueued, store.JobRunning}, 1<<30)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.State == store.JobQueued {
				// Its client waited on the old process and is gone.
				if err := tx.EndJob(j.ID, store.JobCanceled, now, sql.NullInt64{}, "control plane restarted", ""); err != nil {
					return err
				}
				continue
			}
			js, err := b.describe(tx, j)
			if err != nil {
				return err
			}
			js.lease, js.granted, js.reloaded = now.Add(cfg.LeaseTTL), true, true
			if !j.StopAt.IsZero() {
				// Its node may not have heard it: its grace starts again.
				js.stopping = &stopOrder{since: now, grace: j.StopGrace, reason: j.StopReason}
			}
			b.track(js)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: load state: %w", err)
	}
	b.rebuildLocked()
	return b, nil
}

// track adds a live job (queued, or running at load) to jobs and the indexes.
func (b *broker) track(j *jobState) {
	b.jobs[j.ID] = j
	if j.State == store.JobRunning {
		b.holders[j.ServerID] = j
		b.beats.Lock()
		b.running[j.ID] = j
		b.beats.Unlock()
		b.runningEnds = nil
	} else {
		b.waitingOf[j.UserID]++
	}
}

// untrack takes a job out of jobs and the indexes, as it was (queued or
// running) before it ended or started.
func (b *broker) untrack(j *jobState) {
	delete(b.jobs, j.ID)
	if j.State == store.JobRunning {
		delete(b.holders, j.ServerID)
		b.beats.Lock()
		delete(b.running, j.ID)
		b.beats.Unlock()
		b.runningEnds = nil
	} else if b.waitingOf[j.UserID]--; b.waitingOf[j.UserID] == 0 {
		delete(b.waitingOf, j.UserID)
	}
}

// rebuildLocked makes the queue and the snapshot anew from jobs: at load,
// and after a failed commit left them ahead of jobs.
func (b *broker) rebuildLocked() {
	b.snap = nil
	b.queue = sched.NewQueue()
	for _, j := range b.jobs {
		if j.State == store.JobRunning {
			b.queue.Hold(j.ServerID)
		} else {
			b.queue.Push(j.schedJob())
		}
	}
}

// describe fills the names shown with a job.
func (b *broker) describe(tx *store.Tx, j store.Job) (*jobState, error) {
	srv, err := tx.ServerByID(j.ServerID)
	if err != nil {
		return nil, err
	}
	return &jobState{Job: j, serverName: srv.Name, userName: srv.UserName, image: imageOf(srv), changed: make(chan struct{}, 1)}, nil
}

// snapshotLocked returns the scheduler's view: ready nodes, and the memory
// running jobs hold on them, built anew after nodes change.
func (b *broker) snapshotLocked() *sched.Snapshot {
	if b.snap != nil {
		return b.snap
	}
	held := map[string]int64{}
	for _, j := range b.running {
		for _, p := range j.Placements {
			held[p.GPU] += p.MemoryMiB
		}
	}
	names := make([]string, 0, len(b.nodes))
	for name, n := range b.nodes {
		if !n.lost && !n.Drained {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	snap := &sched.Snapshot{}
	for _, name := range names {
		n := sched.Node{Name: name}
		for _, g := range b.nodes[name].GPUs {
			n.GPUs = append(n.GPUs, sched.GPU{UUID: g.UUID, MemoryMiB: g.MemoryMiB, AllocatedMiB: held[g.UUID]})
		}
		snap.Nodes = append(snap.Nodes, n)
	}
	b.snap = snap
	return snap
}

// plan is a job's placements as the scheduler knows them.
func (j *jobState) plan() sched.Plan {
	var p sched.Plan
	for _, pl := range j.Placements {
		p.Placements = append(p.Placements, sched.Placement{Node: pl.Node, GPU: pl.GPU, MemoryMiB: pl.MemoryMiB})
	}
	return p
}

// passLocked serves the queue as it will be once the current change
// commits (the caller has pushed, removed or freed what it changes). gone
// is a running job that ends with the change: the pass sees its memory
// free.
func (b *broker) passLocked(gone *jobState) sched.Result {
	snap := b.snapshotLocked()
	if gone != nil {
		// Schedule as if it were gone; the commit makes that true.
		sched.Release(snap, gone.plan())
		defer sched.Apply(snap, gone.plan())
	}
	return b.queue.Pass(snap)
}

// writeResult records a pass's grants and rejects in tx.
func (b *broker) writeResult(tx *store.Tx, res sched.Result, now time.Time) error {
	for _, g := range res.Grants {
		if err := tx.GrantJob(g.JobID, now, toStore(g.Plan)); err != nil {
			return err
		}
	}
	for _, r := range res.Rejects {
		if err := tx.EndJob(r.JobID, store.JobCanceled, now, sql.NullInt64{}, r.Err.Error(), ""); err != nil {
			return err
		}
	}
	return nil
}

// applyResultLocked makes a pass take effect in memory (the queue knows
// already) and returns what tells the granted and rejected jobs' clients
// once it committed.
func (b *broker) applyResultLocked(res sched.Result, now time.Time) (publish func()) {
	var granted, rejected []*jobState
	for _, g := range res.Grants {
		j := b.jobs[g.JobID]
		if b.snap != nil {
			sched.Apply(b.snap, g.Plan)
		}
		b.untrack(j)
		j.State, j.AllocatedAt, j.Placements = store.JobRunning, now, toStore(g.Plan)
		j.lease = now.Add(b.cfg.LeaseTTL)
		b.track(j)
		granted = append(granted, j)
	}
	for _, r := range res.Rejects {
		j := b.jobs[r.JobID]
		b.untrack(j)
		j.State, j.EndedAt, j.EndReason, j.endErr = store.JobCanceled, now, r.Err.Error(), rejectError(j, r.Err)
		b.ending[j.ID] = j
		rejected = append(rejected, j)
	}
	return func() {
		for _, j := range granted {
			j.granted = true
			j.notify()
		}
		b.obs.started.Add(float64(len(granted)))
		for _, j := range rejected {
			b.endedLocked(j)
		}
		// Other waiting clients read their place once a second; the one
		// now first in line hears at once.
		if next, ok := b.queue.Next(); ok {
			b.jobs[next.ID].notify()
		}
	}
}

func toStore(p sched.Plan) []store.Placement {
	out := make([]store.Placement, len(p.Placements))
	for i, pl := range p.Placements {
		out[i] = store.Placement{Node: pl.Node, GPU: pl.GPU, MemoryMiB: pl.MemoryMiB}
	}
	return out
}

// submit queues a job for srv and runs a pass; the job may come back
// already granted.
func (b *broker) submit(srv store.Server, memMiB int64, priority int, command string, clientPID int64, detached bool) (*jobState, error) {
	b.mu.Lock()
	if max := b.cfg.Quotas.WaitingJobs; max > 0 {
		if waiting := b.waitingOf[srv.UserID]; waiting >= max {
			b.mu.Unlock()
			return nil, fmt.Errorf("%w: %s has %d runs waiting already, the most one user may; wait for some to start or cancel them (hac queue), or ask the operator to raise --max-waiting-jobs", ErrQuota, srv.UserName, waiting)
		}
	}
	now := b.cfg.Now()
	b.lastID++
	j := &jobState{
		Job: store.Job{ID: b.lastID, ServerID: srv.ID, UserID: srv.UserID, Model: srv.Model, MemoryMiB: memMiB, Priority: priority,
			Command: command, ClientPID: clientPID, State: store.JobQueued, SubmittedAt: now, Detached: detached},
		serverName: srv.Name, userName: srv.UserName, image: imageOf(srv), changed: make(chan struct{}, 1),
	}
	row := j.Job
	b.queue.Push(j.schedJob())
	res := b.passLocked(nil)
	b.track(j)
	publish := b.applyResultLocked(res, now)
	ch := b.queueLocked(func(tx *store.Tx) error {
		if _, err := tx.InsertJob(row); err != nil {
			return err
		}
		return b.writeResult(tx, res, now)
	}, publish)
	b.mu.Unlock()
	if err := b.settle(ch); err != nil {
		return nil, err
	}
	return j, nil
}

// end finishes a live job with a final state and frees what it held. It is
// a no-op for a job that already ended, and reports whether it ended one.
func (b *broker) end(id int64, state store.JobState, exitCode sql.NullInt64, reason, fault string) (bool, error) {
	b.mu.Lock()
	ch := b.endLocked(id, state, exitCode, reason, fault)
	b.mu.Unlock()
	if ch == nil {
		return false, nil
	}
	return true, b.settle(ch)
}

// markFault takes back the charge of job id, which ended as its client
// said, when its first node (where its program runs) reports that an
// infrastructure fault ended it: at most faultLate after the end, and not
// for a run that began in a month whose statement is final. The write
// queues behind the end's, so that it finds the end committed.
func (b *broker) markFault(id int64, node, fault string) error {
	b.mu.Lock()
	notBefore := b.cfg.Now().Add(-faultLate)
	// A month is final once it ended faultLate ago: a run that began
	// in one keeps its charge.
	t := notBefore.UTC()
	settledBefore := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	ch := b.queueLocked(func(tx *store.Tx) error {
		_, err := tx.MarkJobFault(id, node, fault, notBefore, settledBefore)
		return err
	}, nil)
	b.mu.Unlock()
	return b.settle(ch)
}

// faultLate is how long after a job's end its node may still report that
// a fault ended it (the node retries its report for about a minute).
const faultLate = 5 * time.Minute

// endLocked ends a live job in memory and queues the write; it returns
// nil when the job ended already. fault, when not empty, names the
// infrastructure fault that ended it: the run is not charged.
func (b *broker) endLocked(id int64, state store.JobState, exitCode sql.NullInt64, reason, fault string) *change {
	return b.endAtLocked(id, time.Time{}, state, exitCode, reason, fault)
}

// endAtLocked is endLocked with the time the job ended, when it is not now
// (an end queued again after a failed commit keeps its time).
func (b *broker) endAtLocked(id int64, ended time.Time, state store.JobState, exitCode sql.NullInt64, reason, fault string) *change {
	j := b.jobs[id]
	if j == nil {
		return nil
	}
	now := b.cfg.Now()
	if ended.IsZero() || ended.After(now) || ended.Before(j.AllocatedAt) {
		ended = now
	}
	var gone *jobState
	if j.State == store.JobRunning {
		b.queue.Free(j.ServerID)
		gone = j
	} else {
		b.queue.Remove(id)
	}
	res := b.passLocked(gone)
	b.untrack(j)
	if j.State == store.JobRunning {
		if b.snap != nil {
			sched.Release(b.snap, j.plan())
		}
		b.runTimes.add(j.UserID, j.Model, j.Command, ended.Sub(j.AllocatedAt))
		b.runningEnds = nil
	}
	j.State, j.EndedAt, j.ExitCode, j.EndReason, j.fault = state, ended, exitCode, reason, fault
	b.ending[id] = j
	publish := b.applyResultLocked(res, now)
	b.log.Info("job ended", "job", id, "server", j.serverName, "state", state, "reason", reason)
	return b.queueLocked(func(tx *store.Tx) error {
		if err := tx.EndJob(id, state, ended, exitCode, reason, fault); err != nil {
			return err
		}
		return b.writeResult(tx, res, now)
	}, func() {
		b.endedLocked(j)
		publish()
		if first, ok := b.queue.First(j.ServerID); ok {
			// The server's next job no longer waits for this one.
			b.jobs[first.ID].notify()
		}
	})
}

// endedLocked publishes a job's end once it committed.
func (b *broker) endedLocked(j *jobState) {
	if b.ending[j.ID] == j {
		delete(b.ending, j.ID)
	}
	if !j.ended {
		j.ended = true
		b.obs.ended.WithLabelValues(string(j.State)).Inc()
	}
	j.notify()
}

// job returns a copy of a live job's state, or ok=false when it ended.
func (b *broker) job(id int64) (jobState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j, ok := b.jobs[id]
	if !ok {
		return jobState{}, false
	}
	return b.copyLocked(j), true
}

// copyLocked copies a live job, with what heartbeats last said of it.
func (b *broker) copyLocked(j *jobState) jobState {
	b.beats.Lock()
	defer b.beats.Unlock()
	return *j
}

// serverJob returns the live job of a server that holds (or first waits
// for) its accelerator.
func (b *broker) serverJob(serverID int64) (jobState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.serverJobLocked(serverID)
	if j == nil {
		return jobState{}, false
	}
	return b.copyLocked(j), true
}

func (b *broker) serverJobLocked(serverID int64) *jobState {
	if h := b.holders[serverID]; h != nil {
		return h
	}
	if first, ok := b.queue.First(serverID); ok {
		return b.jobs[first.ID]
	}
	return nil
}

// renew extends a running job's lease by ttl, if may says the caller may.
func (b *broker) renew(id int64, ttl time.Duration, may func(*jobState) bool) error {
	b.beats.Lock()
	defer b.beats.Unlock()
	j := b.running[id]
	if j == nil || !may(j) {
		return fmt.Errorf("%w: job %d is not running", ErrUnknownJob, id)
	}
	j.lease, j.reloaded = b.cfg.Now().Add(ttl), false
	return nil
}

// switchModel changes a server's model unless a job holds or awaits its
// accelerator; the check and the write happen under one lock.
func (b *broker) switchModel(serverID int64, model string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.serverJobLocked(serverID) != nil {
		return ErrInUse
	}
	return b.settleLocked(b.queueLocked(func(tx *store.Tx) error { return tx.SetServerModel(serverID, model) }, nil))
}

// expire ends running jobs whose lease passed and declares silent nodes
// lost. It runs once per tick of the control plane's reaper.
func (b *broker) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	var expired []int64
	silent := map[string]time.Duration{}
	b.beats.Lock()
	overdue := map[*jobState]string{} // stopping jobs past their grace, with the reason
	for id, j := range b.running {
		if now.After(j.lease) {
			expired = append(expired, id)
		} else if o := j.stopping; o != nil && now.Sub(o.since) > o.grace+stopOverdue {
			overdue[j] = o.reason
		}
	}
	for name, n := range b.nodes {
		if !n.lost && now.Sub(n.lastSeen) > b.cfg.NodeLostAfter {
			silent[name] = now.Sub(n.lastSeen)
		}
	}
	b.beats.Unlock()
	var changes []*change
	for _, id := range expired {
		b.beats.Lock()
		j := b.running[id]
		renewed := j == nil || !now.After(j.lease) // since the look above
		reloaded := j != nil && j.reloaded
		b.beats.Unlock()
		if renewed {
			continue
		}
		why, fault := "lease expired: the client stopped renewing it", "" // the client's side: charged
		if j.Detached {
			why = "lease expired: neither its client (before the start) nor its node (after) renewed it"
		}
		if reloaded {
			why = "the control plane restarted, and neither the job's client nor its node spoke of it again: its end was not heard"
			fault = why
		}
		changes = append(changes, b.endLocked(id, store.JobLost, sql.NullInt64{}, why, fault))
	}
	for j, reason := range overdue {
		if b.jobs[j.ID] == j {
			changes = append(changes, b.endLocked(j.ID, store.JobCanceled, sql.NullInt64{}, reason+" (its node did not report the end in time)", ""))
		}
	}
	if err := b.settleLocked(changes...); err != nil {
		b.log.Error("expire leases", "err", err)
	}
	for name, d := range silent {
		if err := b.loseNodeLocked(name, "node lost: no heartbeat for "+d.Round(time.Second).String()); err != nil {
			b.log.Error("lose node", "node", name, "err", err)
		}
	}
}

// removeNode takes a node out of the pool for good (hac node remove): its
// running jobs end as lost, its credentials are revoked.
func (b *broker) removeNode(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, registered := b.nodes[name]
	if registered {
		b.markLostLocked(name)
		if err := b.endJobsOnLocked(name, "node removed by an admin"); err != nil {
			return err
		}
	}
	known := false
	now := b.cfg.Now()
	err := b.settleLocked(b.queueLocked(func(tx *store.Tx) error {
		enrolled, err := tx.NodeEnrolled(name)
		if err != nil {
			return err
		}
		if known = enrolled || registered; !known {
			return nil
		}
		if err := tx.RevokeNodeTokens(name, "", now); err != nil {
			return err
		}
		return tx.DeleteNode(name)
	}, nil))
	if err != nil {
		return err
	}
	if !known {
		return fmt.Errorf("%w: no node named %s (hac nodes lists them)", ErrUnknownNode, name)
	}
	b.beats.Lock()
	delete(b.nodes, name)
	b.beats.Unlock()
	b.snap = nil
	b.log.Warn("node removed", "node", name)
	return nil
}

// drainNode stops (or resumes) new placements on a node.
func (b *broker) drainNode(name string, drained bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return fmt.Errorf("%w: no node named %s (hac nodes lists them)", ErrUnknownNode, name)
	}
	now := b.cfg.Now()
	was := n.Drained
	n.Drained = drained
	b.snap = nil
	res := b.passLocked(nil)
	publish := b.applyResultLocked(res, now)
	err := b.settleLocked(b.queueLocked(func(tx *store.Tx) error {
		if err := tx.SetNodeDrained(name, drained); err != nil {
			return err
		}
		return b.writeResult(tx, res, now)
	}, publish))
	if err != nil {
		n.Drained = was
		b.rebuildLocked()
		return err
	}
	b.log.Info("node drained", "node", name, "drained", drained)
	return nil
}

// loseNodeLocked fails the jobs on a node and takes its GPUs out of the
// pool until it registers again.
func (b *broker) loseNodeLocked(name, reason string) error {
	b.markLostLocked(name)
	if err := b.endJobsOnLocked(name, reason); err != nil {
		return err
	}
	if err := b.settleLocked(b.queueLocked(func(tx *store.Tx) error { return tx.SetNodeState(name, store.NodeLost) }, nil)); err != nil {
		return err
	}
	b.log.Warn("node lost", "node", name, "reason", reason)
	return nil
}

// markLostLocked takes a node out of placement, before its jobs end, so
// that the passes their ends run put nothing new on it.
func (b *broker) markLostLocked(name string) {
	b.beats.Lock()
	b.nodes[name].lost = true
	b.beats.Unlock()
	b.snap = nil
}

// endJobsOnLocked ends, as lost, the jobs running on node name when it is
// called (not those a pass may grant there meanwhile).
func (b *broker) endJobsOnLocked(name, reason string) error {
	var ids []int64
	for id, j := range b.running {
		if j.onNode(name) {
			ids = append(ids, id)
		}
	}
	var changes []*change
	for _, id := range ids {
		changes = append(changes, b.endLocked(id, store.JobLost, sql.NullInt64{}, reason, reason))
	}
	return b.settleLocked(changes...)
}

func (j *jobState) onNode(name string) bool {
	for _, p := range j.Placements {
		if p.Node == name {
			return true
		}
	}
	return false
}

// registerNode adds or refreshes a node. Jobs it ran before are gone: the
// agent restarted.
func (b *broker) registerNode(n store.Node) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for other, o := range b.nodes {
		if other == n.Name {
			n.Drained = o.Drained
			continue
		}
		for _, g := range o.GPUs {
			for _, mine := range n.GPUs {
				if g.UUID == mine.UUID {
					return fmt.Errorf("%w: GPU %s is node %s's; a GPU belongs to one node", ErrInvalid, g.UUID, other)
				}
			}
		}
	}
	if err := b.endJobsOnLocked(n.Name, "node restarted"); err != nil {
		return err
	}
	now := b.cfg.Now()
	b.beats.Lock()
	b.nodes[n.Name] = &nodeState{Node: n, lastSeen: now}
	b.beats.Unlock()
	b.snap = nil
	res := b.passLocked(nil)
	publish := b.applyResultLocked(res, now)
	err := b.settleLocked(b.queueLocked(func(tx *store.Tx) error {
		if err := tx.PutNode(n); err != nil {
			return err
		}
		return b.writeResult(tx, res, now)
	}, publish))
	if err != nil {
		b.beats.Lock()
		delete(b.nodes, n.Name)
		b.beats.Unlock()
		b.rebuildLocked()
		return err
	}
	b.log.Info("node registered", "node", n.Name, "address", n.Address, "gpus", len(n.GPUs))
	return nil
}

// jobReport is what a heartbeat says of one running job.
type jobReport struct {
	pid     int64 // the program's pid on the node
	usedMiB int64 // GPU memory it uses
	// suspended is how long its client has held it suspended (Ctrl+Z).
	suspended time.Duration
}

// beatAnswer is what a heartbeat tells its node: the jobs to kill (they
// hold nothing any more), the jobs to stop gracefully (hac cancel), or to
// register again.
type beatAnswer struct {
	stop       []int64
	terminate  map[int64]stopOrder
	reregister bool
}

// heartbeat records a node's liveness and its jobs' usage, keeps the
// leases of its detached jobs (no client renews them), and says what the
// node must stop.
func (b *broker) heartbeat(name string, running map[int64]jobReport) beatAnswer {
	b.beats.Lock()
	defer b.beats.Unlock()
	n := b.nodes[name]
	if n == nil || n.lost {
		return beatAnswer{reregister: true}
	}
	now := b.cfg.Now()
	n.lastSeen = now
	var out beatAnswer
	for id, r := range running {
		j := b.running[id]
		if j == nil || !j.onNode(name) {
			out.stop = append(out.stop, id)
			continue
		}
		first := j.Placements[0].Node == name
		if first {
			j.pid, j.reloaded = r.pid, false
			if j.Detached {
				j.lease = now.Add(b.cfg.LeaseTTL)
			}
			// The suspended lease the client asked for, from the node's
			// word: a restarted control plane keeps it too. Once the job
			// runs again its client renews, as before the suspension: a
			// brief suspension buys no long lease.
			switch {
			case r.suspended > 0:
				if until := now.Add(b.cfg.SuspendedLease - r.suspended); until.After(j.lease) {
					j.lease = until
				}
				j.suspendedByNode = true
			case j.suspendedByNode:
				j.suspendedByNode = false
				if renewed := now.Add(b.cfg.LeaseTTL); j.lease.After(renewed) {
					j.lease = renewed
				}
			}
		}
		j.usedMiB = r.usedMiB
		if j.stopping != nil {
			if out.terminate == nil {
				out.terminate = map[int64]stopOrder{}
			}
			out.terminate[id] = *j.stopping
		}
	}
	return out
}

// stop orders a running job to stop within grace, or withdraws a waiting
// one; it returns the job as it stands after.
func (b *broker) stop(id int64, grace time.Duration, reason string, may func(*jobState) bool) (jobState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs[id]
	if j == nil || !may(j) {
		return jobState{}, fmt.Errorf("%w: job %d", ErrUnknownJob, id)
	}
	if j.State == store.JobQueued {
		if _, err := b.cancelQueuedLocked(id, reason); err != nil {
			return jobState{}, err
		}
		return b.copyLocked(j), nil
	}
	now := b.cfg.Now()
	b.beats.Lock()
	// A second, shorter order wins; a longer one does not extend.
	shorter := j.stopping == nil || grace < j.stopping.grace-now.Sub(j.stopping.since)
	b.beats.Unlock()
	if !shorter {
		return b.copyLocked(j), nil
	}
	// Kept first, so that a restart of the control plane still sends it;
	// only then sent.
	if err := b.settleLocked(b.queueLocked(func(tx *store.Tx) error { return tx.StopJob(id, now, grace, reason) }, nil)); err != nil {
		return jobState{}, err
	}
	b.beats.Lock()
	j.stopping = &stopOrder{since: now, grace: grace, reason: reason}
	b.beats.Unlock()
	return b.copyLocked(j), nil
}

// nodeKey returns the key that signs a node's tickets.
func (b *broker) nodeKey(name string) ([]byte, string, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nodes[name]
	if n == nil {
		return nil, "", "", fmt.Errorf("%w: %s", ErrUnknownNode, name)
	}
	return n.TicketKey, n.Address, n.WorkerKeyPin, nil
}

// queued is a waiting job and where it stands.
type queued struct {
	jobState
	place place
}

// queueView is hac queue's: the running jobs by id, then the waiting ones
// in service order (those waiting for their server's earlier job last),
// each with where it stands; visible says whose.
func (b *broker) queueView(visible func(*jobState) bool) (running []jobState, waiting []queued) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, j := range b.jobs {
		if !visible(j) {
			continue
		}
		switch j.State {
		case store.JobRunning:
			running = append(running, b.copyLocked(j))
		case store.JobQueued:
			q := queued{jobState: b.copyLocked(j)}
			q.place.wait, _ = b.queue.Wait(j.ID)
			if q.place.wait.Reason == sched.PoolFull {
				q.place.estimate, q.place.basis, _ = b.estimateStartLocked(j, q.place.wait.Position)
			}
			waiting = append(waiting, q)
		}
	}
	slices.SortFunc(running, func(a, c jobState) int { return cmp.Compare(a.ID, c.ID) })
	slices.SortFunc(waiting, func(a, c queued) int {
		pa, pc := a.place.wait.Position, c.place.wait.Position
		if (pa == 0) != (pc == 0) {
			return cmp.Compare(pc, pa) // in line for the pool first
		}
		return cmp.Or(cmp.Compare(pa, pc), cmp.Compare(a.ID, c.ID))
	})
	return running, waiting
}

// nodesView returns the nodes with the memory jobs hold on each GPU.
func (b *broker) nodesView() ([]nodeState, map[string]int64, map[string]int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.beats.Lock()
	defer b.beats.Unlock()
	held, used := map[string]int64{}, map[string]int64{}
	for _, j := range b.running {
		for _, p := range j.Placements {
			held[p.GPU] += p.MemoryMiB
		}
		if len(j.Placements) > 0 {
			used[j.Placements[0].GPU] += j.usedMiB
		}
	}
	var out []nodeState
	for _, n := range b.nodes {
		out = append(out, *n)
	}
	sort.Slice(out, func(a, c int) bool { return out[a].Name < out[c].Name })
	return out, held, used
}

// place is where a waiting job stands, as its client is told.
type place struct {
	wait sched.Wait
	// holder is the job that holds (or first waits for) the server's
	// accelerator (Busy).
	holder *jobState
	// waiting is how many jobs wait for the pool (PoolFull).
	waiting  int
	estimate time.Time // zero without an estimate
	basis    estimateBasis
}

// placeOf says where a waiting job stands; ok is false once it does not
// wait.
func (b *broker) placeOf(id int64) (p place, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs[id]
	if j == nil || j.State != store.JobQueued {
		return place{}, false
	}
	if p.wait, ok = b.queue.Wait(id); !ok {
		return place{}, false
	}
	switch p.wait.Reason {
	case sched.Busy:
		if h := b.serverJobLocked(j.ServerID); h != nil && h.ID != id {
			c := b.copyLocked(h)
			p.holder = &c
		}
	case sched.PoolFull:
		p.waiting = b.queue.PoolWaiting()
		p.estimate, p.basis, _ = b.estimateStartLocked(j, p.wait.Position)
	}
	return p, true
}

// waitingCount is how many jobs wait.
func (b *broker) waitingCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queue.Len()
}

// published returns a copy of a job as its client may see it: granted and
// ended say what committed.
func (b *broker) published(j *jobState) jobState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.copyLocked(j)
}

// rejectError says in the user's words why a job can never run.
func rejectError(j *jobState, err error) error {
	if errors.Is(err, sched.ErrNeverFits) {
		return fmt.Errorf("%w: the model %s needs %d MiB of accelerator memory, more than the whole pool has now; choose a smaller model with hac switch-model, or ask the operator to add GPU nodes",
			ErrTooLarge, j.Model, j.MemoryMiB)
	}
	return err
}

// estimateStartLocked guesses when waiting job j, at queue position pos
// (1-based), may start: each running job is expected to hold the pool
// for the typical run of its model and command (at least until now), one
// ending job is taken to make room for one waiting job, and each place
// beyond the running jobs waits another typical run of j's kind. It
// returns false without history.
func (b *broker) estimateStartLocked(j *jobState, pos int) (time.Time, estimateBasis, bool) {
	own, basis, ok := b.runTimes.typical(j.UserID, j.Model, j.Command)
	if !ok || pos < 1 {
		return time.Time{}, estimateBasis{}, false
	}
	if b.runningEnds == nil {
		b.runningEnds = make([]time.Time, 0, len(b.running))
		for _, r := range b.running {
			d, _, ok := b.runTimes.typical(r.UserID, r.Model, r.Command)
			if !ok {
				d = own
			}
			b.runningEnds = append(b.runningEnds, r.AllocatedAt.Add(d))
		}
		slices.SortFunc(b.runningEnds, func(a, c time.Time) int { return a.Compare(c) })
	}
	now := b.cfg.Now()
	ends := b.runningEnds
	if len(ends) == 0 {
		return now, basis, true
	}
	notBefore := func(t time.Time) time.Time {
		if t.Before(now) {
			return now // overdue: it may end any moment
		}
		return t
	}
	if pos <= len(ends) {
		return notBefore(ends[pos-1]), basis, true
	}
	return notBefore(ends[len(ends)-1]).Add(time.Duration(pos-len(ends)) * own), basis, true
}

// cancelQueued withdraws a job that still waits, telling its client why.
func (b *broker) cancelQueued(id int64, reason string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cancelQueuedLocked(id, reason)
}

func (b *broker) cancelQueuedLocked(id int64, reason string) (bool, error) {
	j := b.jobs[id]
	if j == nil || j.State != store.JobQueued {
		return false, nil
	}
	j.endErr = fmt.Errorf("%w: job %d was %s", ErrCanceled, id, reason)
	return true, b.settleLocked(b.endLocked(id, store.JobCanceled, sql.NullInt64{}, reason, ""))
}
