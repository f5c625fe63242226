package controlplane

import (
	"database/sql"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hac-project/hac/internal/store"
)

// TestQuotas: past the operator's bounds a user's next server and next
// waiting run are refused with a message that says what to do; other
// users are not affected.
func TestQuotas(t *testing.T) {
	_, _, s := testPlane(t, store.Normal, 1, 1) // admin has server s0
	s.cfg.Quotas.Servers = 1
	s.broker.cfg.Quotas.WaitingJobs = 1
	ctx := t.Context()
	var admin store.User
	if err := s.store.View(ctx, func(tx *store.Tx) (err error) { admin, err = tx.UserByName("admin"); return }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.createServer(ctx, admin, "s1", "small.16gb", ""); !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "--max-servers") {
		t.Fatalf("a second server past a quota of 1: %v", err)
	}
	var s0 store.Server
	if err := s.store.View(ctx, func(tx *store.Tx) error {
		srvs, err := tx.Servers(admin.ID)
		s0 = srvs[0]
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The first run holds the accelerator; the second waits for it; a third
	// would be a second waiting run.
	for i, want := range []error{nil, nil, ErrQuota} {
		if _, err := s.broker.submit(s0, 1024, 0, "x", 0, false); !errors.Is(err, want) {
			t.Fatalf("run %d: %v, want %v", i+1, err, want)
		}
	}
	// Another user's server and runs are their own business.
	if err := s.store.Update(ctx, func(tx *store.Tx) error { _, err := tx.CreateUser("bob", false, s.cfg.Now()); return err }); err != nil {
		t.Fatal(err)
	}
	var bob store.User
	s.store.View(ctx, func(tx *store.Tx) (err error) { bob, err = tx.UserByName("bob"); return })
	if _, _, err := s.createServer(ctx, bob, "b1", "small.16gb", ""); err != nil {
		t.Fatalf("bob's first server: %v", err)
	}
}

// TestBurstMeetsTheCap: 10,000 submissions at once from one user meet the
// waiting-runs quota (default 1,000), each refusal naming the user and
// the flag; another user's run, submitted in the middle of it, waits and
// starts in its turn.
func TestBurstMeetsTheCap(t *testing.T) {
	_, _, s := testPlane(t, store.Normal, 1, 0)
	whole := int64(80 * 1024)
	holder, err := s.broker.submit(userServer(t, s, "carol", "hold"), whole, 0, "hold", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	alice := userServer(t, s, "alice", "burst")
	var accepted, refused atomic.Int64
	var bob *jobState
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 10000; i += 32 {
				if w == 0 && i == 5000/32*32 {
					b, err := s.broker.submit(userServer(t, s, "bob", "b"), whole, 0, "bob", 0, false)
					if err != nil {
						t.Errorf("bob's run during alice's burst: %v", err)
					}
					bob = b
				}
				_, err := s.broker.submit(alice, whole, 0, "x", 0, false)
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrQuota) && strings.Contains(err.Error(), "alice") && strings.Contains(err.Error(), "--max-waiting-jobs"):
					refused.Add(1)
				default:
					t.Errorf("submission %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if accepted.Load() != int64(DefaultQuotas.WaitingJobs) || refused.Load() != 10000-int64(DefaultQuotas.WaitingJobs) {
		t.Fatalf("accepted %d, refused %d", accepted.Load(), refused.Load())
	}
	if bob == nil {
		t.Fatal("bob's run was not submitted")
	}
	// Alice's runs take the pool one after another; bob's comes in turn.
	if _, err := s.broker.end(holder.ID, store.JobCompleted, sql.NullInt64{Valid: true}, "", ""); err != nil {
		t.Fatal(err)
	}
	for range 2000 {
		if cur := s.broker.published(bob); cur.granted {
			return
		}
		var running int64
		s.broker.mu.Lock()
		for id := range s.broker.running {
			running = id
		}
		s.broker.mu.Unlock()
		if running == 0 {
			t.Fatal("nothing runs and bob's run was not granted")
		}
		if _, err := s.broker.end(running, store.JobCompleted, sql.NullInt64{Valid: true}, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("bob's run never started")
}
