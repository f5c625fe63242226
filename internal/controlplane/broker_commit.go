package controlplane

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/hac-project/hac/internal/store"
)

// How the broker's changes reach the disk. A change is made in memory
// under mu, as if it had committed, and its write is queued for the
// store's group commit in the same order (store.Queue): many grants and
// releases share one fsync, and the next change is computed while the
// last is on its way to the disk. What a client hears (a grant, the end
// of a job that never started, a release's answer) waits for the commit:
// settle publishes a change once it committed (docs/decisions/0006).
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
// failed. The first caller finds the store failed, waits until every
// queued change has failed, reads the live jobs again and only then lets
// changes be queued again: if the store cannot even be read, it stays
// failed, every change fails at once, and the next one tries again.
//
// Every job memory knows goes on where the store has it, as the same
// jobState, so that its waiting client keeps listening: waiting or
// running again (a grant that did not commit is undone), or ended. A job
// that memory ended but whose end did not commit is live again, and its
// end is queued once more a second later (a release, an exit, a cancel
// happened; the retry waits so that a broken disk is not hammered). A job
// whose row never committed ends, its client told why. Nodes are as their
// own changes, which wait holding mu and undo themselves, leave them.
func (b *broker) reconcileLocked(cause error) {
	if !b.store.Failed() {
		return
	}
	b.store.Drain()
	known := make(map[int64]*jobState, len(b.jobs)+len(b.ending))
	for id, j := range b.jobs {
		known[id] = j
	}
	for id, j := range b.ending {
		known[id] = j
	}
	stored := map[int64]store.Job{}
	var revived []*jobState
	err := b.store.View(context.Background(), func(tx *store.Tx) error {
		jobs, err := tx.Jobs(0, []store.JobState{store.JobQueued, store.JobRunning}, 1<<30)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			stored[j.ID] = j
			if known[j.ID] == nil { // cannot be: memory runs ahead, never behind
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
		b.log.Error("a commit failed and the store cannot be read; changes fail until it can", "commit", cause, "read", err)
		return
	}
	b.log.Error("a commit failed; the queue and the pool are read again from the store", "err", cause)
	now := b.cfg.Now()
	lost := fmt.Errorf("%w (%v)", errNotRecorded, cause)
	var again []endAgain
	jobs, holders, waitingOf, running := map[int64]*jobState{}, map[int64]*jobState{}, map[int64]int{}, map[int64]*jobState{}
	index := func(j *jobState) {
		jobs[j.ID] = j
		if j.State == store.JobRunning {
			holders[j.ServerID], running[j.ID] = j, j
		} else {
			waitingOf[j.UserID]++
		}
	}
	for id, j := range known {
		wasEnding := b.ending[id] == j
		sj, live := stored[id]
		switch {
		case !live && wasEnding: // its end committed, or its row never did: it ended as meant
			b.endedLocked(j)
			continue
		case !live:
			j.State, j.EndedAt, j.endErr = store.JobCanceled, now, lost
			b.endedLocked(j)
			continue
		case wasEnding:
			again = append(again, endAgain{j: j, at: j.EndedAt, state: j.State, exitCode: j.ExitCode, reason: j.EndReason, fault: j.fault, err: j.endErr})
		}
		j.State, j.AllocatedAt, j.Placements = sj.State, sj.AllocatedAt, sj.Placements
		j.EndedAt, j.ExitCode, j.EndReason, j.fault, j.endErr = time.Time{}, sql.NullInt64{}, "", "", nil
		j.granted = j.State == store.JobRunning
		if j.granted && j.lease.IsZero() {
			j.lease = now.Add(b.cfg.LeaseTTL)
		}
		index(j)
		j.notify()
	}
	for _, j := range revived {
		j.lease, j.granted = now.Add(b.cfg.LeaseTTL), j.State == store.JobRunning
		index(j)
	}
	b.jobs, b.holders, b.waitingOf, b.ending = jobs, holders, waitingOf, map[int64]*jobState{}
	b.beats.Lock()
	b.running = running // whole: heartbeats never see a part of it
	b.beats.Unlock()
	b.rebuildLocked()
	b.runningEnds = nil
	b.store.Resume()
	if len(again) > 0 {
		time.AfterFunc(endAgainAfter, func() { b.endAgain(again) })
	}
}

// endAgainAfter is how long after a failed commit the ends it lost are
// queued again.
const endAgainAfter = time.Second

// endAgain is an end that did not commit, to queue again.
type endAgain struct {
	j        *jobState
	at       time.Time // when it ended: a retry does not move it
	state    store.JobState
	exitCode sql.NullInt64
	reason   string
	fault    string
	err      error
}

// endAgain queues again the ends a failed commit lost, of the jobs that
// are still live as they were.
func (b *broker) endAgain(ends []endAgain) {
	b.mu.Lock()
	var changes []*change
	for _, e := range ends {
		if b.jobs[e.j.ID] != e.j {
			continue // it ended or was reconciled since
		}
		e.j.endErr = e.err
		changes = append(changes, b.endAtLocked(e.j.ID, e.at, e.state, e.exitCode, e.reason, e.fault))
	}
	b.mu.Unlock()
	for _, ch := range changes {
		b.settle(ch)
	}
}
