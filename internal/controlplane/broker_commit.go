package controlplane

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/hac-project/hac/internal/store"
)

// How the broker's changes reach the disk. A change is made in memory
// under mu, as if it had committed, and its write is queued for the
// store's group commit in the same order (store.Queue): many grants and
// releases share one fsync, and the next change is computed while the
// last is on its way to the disk. What a client hears (a grant, the end
// of a job that never started, a release's answer) waits for the commit:
// settle publishes a change once it committed.
//
// A failed commit leaves memory ahead of the disk with changes that will
// never be; reconcileLocked then reads the live jobs again from the store,
// as a restart would, but keeps the waiting clients that the store still
// has.

// change is a broker write on its way to the disk.
type change struct {
	*store.Change
	// publish tells the clients the change concerns, under mu, once it
	// committed; nil when there are none.
	publish func()
}

// queueLocked queues a write computed under mu. fn runs on the store's
// goroutine: it may read only what nothing changes after (copies, values).
func (b *broker) queueLocked(fn func(*store.Tx) error, publish func()) *change {
	return &change{Change: b.store.Queue(fn), publish: publish}
}

// settle waits, without mu, for ch to commit and publishes it.
func (b *broker) settle(ch *change) error {
	err := ch.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.settledLocked(ch, err)
}

// settleLocked waits holding mu: for changes rare enough to hold up the
// others (a node's, a model switch), and whose caller goes on from what
// committed. It waits for all, publishes those that committed and returns
// the first error.
func (b *broker) settleLocked(changes ...*change) error {
	var first error
	for _, ch := range changes {
		if err := b.settledLocked(ch, ch.Wait()); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (b *broker) settledLocked(ch *change, err error) error {
	if err != nil {
		b.reconcileLocked(err)
		return fmt.Errorf("%w: %w", errNotRecorded, err)
	}
	if ch.publish != nil {
		ch.publish()
	}
	return nil
}

// errNotRecorded is the error of a change that did not commit.
var errNotRecorded = errors.New("the control plane could not record this; try again, and if it fails again tell the operator (hac serve's log says why)")

// reconcileLocked makes memory what the store holds, after a queued change
// failed. Once per failure: the first caller finds the store failed, waits
// until every queued change has failed, and reads the live jobs again.
// Jobs the store still has go on where it has them (waiting or running,
// their clients kept); the others end, their clients told why. Nodes are
// as their own changes, which wait holding mu, left them.
func (b *broker) reconcileLocked(cause error) {
	if !b.store.Resume() {
		return
	}
	b.log.Error("a commit failed; the queue and the pool are read again from the store", "err", cause)
	ctx := context.Background()
	stored := map[int64]store.Job{}
	var revived []*jobState
	err := b.store.View(ctx, func(tx *store.Tx) error {
		jobs, err := tx.Jobs(0, []string{store.JobQueued, store.JobRunning}, 1<<30)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			stored[j.ID] = j
			if b.jobs[j.ID] == nil {
				js, err := b.describe(tx, j)
				if err != nil {
					return err
				}
				revived = append(revived, js)
			}
		}
		return nil
	})
	if err != nil {
		// Nothing to go by: memory stays as it is, and the next change
		// that fails tries again.
		b.log.Error("reading the store after a failed commit", "err", err)
		return
	}
	now := b.cfg.Now()
	lost := fmt.Errorf("%w (%v)", errNotRecorded, cause)
	live := b.jobs
	b.jobs, b.holders, b.waitingOf = map[int64]*jobState{}, map[int64]*jobState{}, map[int64]int{}
	b.beats.Lock()
	b.running = map[int64]*jobState{}
	b.beats.Unlock()
	for id, j := range live {
		sj, ok := stored[id]
		if !ok {
			j.State, j.EndedAt, j.endErr, j.ended = store.JobCanceled, now, lost, true
			j.notify()
			continue
		}
		j.State, j.AllocatedAt, j.Placements = sj.State, sj.AllocatedAt, sj.Placements
		if j.State == store.JobRunning {
			j.granted = true
			if j.lease.IsZero() {
				j.lease = now.Add(b.cfg.LeaseTTL)
			}
		}
		b.track(j)
		j.notify()
	}
	for _, j := range revived {
		// Ended in memory, not on the disk: a running one's lease runs
		// out unless its client renews it.
		j.lease, j.granted = now.Add(b.cfg.LeaseTTL), j.State == store.JobRunning
		b.track(j)
	}
	b.rebuildLocked()
	b.runningEnds = nil
	for _, j := range revived {
		if j.State == store.JobQueued {
			// Its client withdrew it: no one waits for it.
			go b.settle(b.endLocked(j.ID, store.JobCanceled, sql.NullInt64{}, "withdrawn by the client"))
		}
	}
}
