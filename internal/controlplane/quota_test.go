package controlplane

import (
	"errors"
	"strings"
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
	if _, _, err := s.createServer(ctx, admin, "s1", "small.16gb"); !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "--max-servers") {
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
		if _, err := s.broker.submit(ctx, s0, 1024, 0, "x", 0); !errors.Is(err, want) {
			t.Fatalf("run %d: %v, want %v", i+1, err, want)
		}
	}
	// Another user's server and runs are their own business.
	if err := s.store.Update(ctx, func(tx *store.Tx) error { _, err := tx.CreateUser("bob", false, s.cfg.Now()); return err }); err != nil {
		t.Fatal(err)
	}
	var bob store.User
	s.store.View(ctx, func(tx *store.Tx) (err error) { bob, err = tx.UserByName("bob"); return })
	if _, _, err := s.createServer(ctx, bob, "b1", "small.16gb"); err != nil {
		t.Fatalf("bob's first server: %v", err)
	}
}
