package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNotWritten is the error of a queued change that was not written
// because another change of its group, or the commit they shared, or a
// change queued before it failed.
var ErrNotWritten = errors.New("store: not written: a change queued with it or before it failed")

// maxGroup is the most changes one group commit writes.
const maxGroup = 1024

// Change is a write queued with Store.Queue.
type Change struct {
	fn   func(*Tx) error
	done chan struct{}
	err  error
}

// Wait returns once the change committed (nil) or failed.
func (c *Change) Wait() error {
	<-c.done
	return c.err
}

func (c *Change) finish(err error) {
	c.err = err
	close(c.done)
}

// group is the queue of changes for group commits.
type group struct {
	mu      sync.Mutex
	queue   []*Change
	running bool  // a goroutine commits the queue
	failed  error // a commit failed: every change fails until Resume
	idle    *sync.Cond
	observe CommitObserver
}

// Queue queues fn to be written in order, after every change queued before
// it, in one transaction with those queued while the last commit was on its
// way to the disk: a group commit, one fsync for many writers. fn runs on
// the store's own goroutine; the change commits with its group.
//
// Queue is for writes computed from a state kept in memory ahead of the
// disk: when a change or its commit fails, it and every change queued
// after it fail too (they were computed on top of it), until the caller
// has read its state again and calls Resume.
func (s *Store) Queue(fn func(*Tx) error) *Change {
	c := &Change{fn: fn, done: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed != nil {
		c.finish(fmt.Errorf("%w: %w", ErrNotWritten, g.failed))
		return c
	}
	g.queue = append(g.queue, c)
	if !g.running {
		g.running = true
		go s.commitGroups()
	}
	return c
}

// Failed says whether a queued change failed and Resume was not called.
func (s *Store) Failed() bool {
	g := &s.group
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed != nil
}

// Drain waits until every change queued has been written or failed.
func (s *Store) Drain() { s.group.waitIdle() }

// Resume lets changes be queued again after a failure, once the caller has
// read its state again (after Drain). It reports whether there was one.
func (s *Store) Resume() bool {
	g := &s.group
	g.waitIdle()
	g.mu.Lock()
	defer g.mu.Unlock()
	failed := g.failed != nil
	g.failed = nil
	return failed
}

// commitGroups writes the queue, a group per transaction, until it is empty.
func (s *Store) commitGroups() {
	g := &s.group
	for {
		g.mu.Lock()
		if len(g.queue) == 0 || g.failed != nil {
			for _, c := range g.queue {
				c.finish(fmt.Errorf("%w: %w", ErrNotWritten, g.failed))
			}
			g.queue = nil
			g.running = false
			g.idle.Broadcast()
			g.mu.Unlock()
			return
		}
		n := min(len(g.queue), maxGroup)
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()
		failed, err := s.commitGroup(batch)
		if err != nil {
			// Before any change is told: whoever hears of the failure
			// finds the store failed.
			g.mu.Lock()
			g.failed = err
			g.mu.Unlock()
		}
		for i, c := range batch {
			switch {
			case err == nil:
				c.finish(nil)
			case i == failed:
				c.finish(err)
			default:
				c.finish(fmt.Errorf("%w: %w", ErrNotWritten, err))
			}
		}
	}
}

// CommitObserver is told of every group commit: how many changes it wrote
// and how long its transaction took, commit included.
type CommitObserver func(changes int, d time.Duration)

// ObserveCommits sets the store's CommitObserver; call it before Queue.
func (s *Store) ObserveCommits(o CommitObserver) { s.group.observe = o }

// commitGroup writes batch in one transaction; on an error it says which
// change failed (-1: the commit itself).
func (s *Store) commitGroup(batch []*Change) (failed int, err error) {
	start := time.Now()
	failed = -1
	err = s.Update(context.Background(), func(tx *Tx) error {
		for i, c := range batch {
			if err := c.fn(tx); err != nil {
				failed = i
				return err
			}
		}
		return nil
	})
	if s.group.observe != nil {
		s.group.observe(len(batch), time.Since(start))
	}
	return failed, err
}

// waitIdle waits until no group commit runs.
func (g *group) waitIdle() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.running {
		g.idle.Wait()
	}
}
