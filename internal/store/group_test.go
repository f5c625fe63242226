package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestQueueGroupsInOrder queues changes from many goroutines: each commits,
// in its queue's order, and groups share transactions.
func TestQueueGroupsInOrder(t *testing.T) {
	s := open(t, Full)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last *Change
			for i := range 50 {
				name, prev := fmt.Sprintf("u%d-%d", g, i), fmt.Sprintf("u%d-%d", g, i-1)
				last = s.Queue(func(tx *Tx) error {
					if _, err := tx.UserByName(prev); i > 0 && err != nil {
						return fmt.Errorf("%s before %s: %w", name, prev, err)
					}
					_, err := tx.CreateUser(name, false, time.Unix(int64(i), 0))
					return err
				})
			}
			if err := last.Wait(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	err := s.View(ctx, func(tx *Tx) error {
		for g := range 8 {
			for i := range 50 {
				if _, err := tx.UserByName(fmt.Sprintf("u%d-%d", g, i)); err != nil {
					return fmt.Errorf("u%d-%d: %w", g, i, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestQueueFailureStops fails one change: it, the changes of its group and
// all queued after it fail, until Resume; then changes commit again.
func TestQueueFailureStops(t *testing.T) {
	s := open(t, Normal)
	ctx := context.Background()
	add := func(name string) *Change {
		return s.Queue(func(tx *Tx) error { _, err := tx.CreateUser(name, false, time.Now()); return err })
	}
	if err := add("before").Wait(); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("the disk is on fire")
	failing := s.Queue(func(*Tx) error { return bad })
	after := add("after")
	if err := failing.Wait(); !errors.Is(err, bad) {
		t.Errorf("the failing change: %v", err)
	}
	if err := after.Wait(); !errors.Is(err, ErrNotWritten) {
		t.Errorf("a change after it: %v", err)
	}
	if !s.Failed() {
		t.Error("the store does not say it failed")
	}
	if err := add("still failed").Wait(); !errors.Is(err, ErrNotWritten) || !errors.Is(err, bad) {
		t.Errorf("a change queued before Resume: %v", err)
	}
	if !s.Resume() || s.Resume() {
		t.Error("Resume does not report the failure once")
	}
	if err := add("resumed").Wait(); err != nil {
		t.Fatal(err)
	}
	err := s.View(ctx, func(tx *Tx) error {
		for name, want := range map[string]bool{"before": true, "after": false, "still failed": false, "resumed": true} {
			_, err := tx.UserByName(name)
			if got := err == nil; got != want {
				t.Errorf("user %q stored: %v, want %v", name, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAccountsGeneration: a commit that writes tokens, users, servers or
// key pairs moves the generation, after it committed; others do not.
func TestAccountsGeneration(t *testing.T) {
	s := open(t, Normal)
	ctx := context.Background()
	now := time.Now()
	gen := s.AccountsGeneration()
	var uid int64
	if err := s.Update(ctx, func(tx *Tx) (err error) { uid, err = tx.CreateUser("alice", false, now); return err }); err != nil {
		t.Fatal(err)
	}
	if s.AccountsGeneration() == gen {
		t.Error("a new user left the generation")
	}
	gen = s.AccountsGeneration()
	err := s.Update(ctx, func(tx *Tx) error {
		return tx.PutNode(Node{Name: "n1", Address: "a:1", TicketKey: []byte("k"), State: "ready", RegisteredAt: now})
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.AccountsGeneration() != gen {
		t.Error("a node moved the generation")
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.RevokeTokens(UserToken, uid, 0, now) }); err != nil {
		t.Fatal(err)
	}
	if s.AccountsGeneration() == gen {
		t.Error("a revocation left the generation")
	}
	// Read inside a transaction: the same prepared statements, many times.
	for range 3 {
		if err := s.View(ctx, func(tx *Tx) error { _, err := tx.UserByName("alice"); return err }); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.rstmts.m) == 0 || len(s.stmts.m) == 0 {
		t.Errorf("no statement kept: %d readers', %d writer's", len(s.rstmts.m), len(s.stmts.m))
	}
}

// TestQueueFailureFinishesAll: past a failure, every change queued, more
// than one group's worth, is answered.
func TestQueueFailureFinishesAll(t *testing.T) {
	s := open(t, Normal)
	block := make(chan struct{})
	first := s.Queue(func(*Tx) error { <-block; return nil })
	failing := s.Queue(func(*Tx) error { return errors.New("no") })
	var rest []*Change
	for range 3 * maxGroup {
		rest = append(rest, s.Queue(func(*Tx) error { return nil }))
	}
	close(block)
	first.Wait()
	failing.Wait()
	done := make(chan struct{})
	go func() {
		for _, c := range rest {
			c.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("changes queued after a failure were never answered")
	}
	s.Drain()
	if !s.Resume() {
		t.Error("no failure to resume from")
	}
}

// TestUpdatePanicFreesTheWriter: a transaction whose function panics gives
// the one writer connection back.
func TestUpdatePanicFreesTheWriter(t *testing.T) {
	s := open(t, Normal)
	ctx := context.Background()
	func() {
		defer func() { recover() }()
		s.Update(ctx, func(tx *Tx) error {
			tx.UserByName("missed statement") // so that one waits to be prepared
			panic("boom")
		})
	}()
	done := make(chan error, 1)
	go func() {
		done <- s.Update(ctx, func(tx *Tx) error { _, err := tx.CreateUser("after", false, time.Now()); return err })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer is still held after a panic")
	}
}
