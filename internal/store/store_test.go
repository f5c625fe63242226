package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func open(t testing.TB, d Durability) *Store {
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "hac.db"), d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestJobLifecycle stores a user, a server, a node and a job through its
// states, and reads them back after reopening the file.
func TestJobLifecycle(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hac.db")
	s, err := OpenSQLite(ctx, path, Full)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	var jobID int64
	err = s.Update(ctx, func(tx *Tx) error {
		uid, err := tx.CreateUser("alice", false, now)
		if err != nil {
			return err
		}
		if err := tx.AddToken("h1", Token{Kind: UserToken, UserID: uid}, now); err != nil {
			return err
		}
		sid, err := tx.CreateServer(Server{UserID: uid, Name: "web1", Model: "small.16gb", AcceleratorToken: "pub", CreatedAt: now})
		if err != nil {
			return err
		}
		if err := tx.PutNode(Node{Name: "n1", Address: "a:1", TicketKey: []byte("k"), State: "ready", RegisteredAt: now,
			GPUs: []GPU{{UUID: "GPU-1", Name: "x", MemoryMiB: 100}}}); err != nil {
			return err
		}
		jobID, err = tx.InsertJob(Job{ServerID: sid, UserID: uid, Model: "small.16gb", MemoryMiB: 16, Command: "true", SubmittedAt: now})
		if err != nil {
			return err
		}
		if err := tx.GrantJob(jobID, now, []Placement{{Node: "n1", GPU: "GPU-1", MemoryMiB: 16}}); err != nil {
			return err
		}
		return tx.EndJob(jobID, JobCompleted, now.Add(time.Second), sql.NullInt64{Int64: 0, Valid: true}, "program exited", "")
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenSQLite(ctx, path, Full)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(ctx, func(tx *Tx) error {
		jobs, err := tx.Jobs(0, nil, 10)
		if err != nil {
			return err
		}
		if len(jobs) != 1 || jobs[0].State != JobCompleted || len(jobs[0].Placements) != 1 || !jobs[0].ExitCode.Valid {
			t.Errorf("jobs = %+v", jobs)
		}
		tok, err := tx.TokenByHash("h1")
		if err != nil || tok.Kind != UserToken {
			t.Errorf("token = %+v, %v", tok, err)
		}
		nodes, err := tx.Nodes()
		if err != nil || len(nodes) != 1 || len(nodes[0].GPUs) != 1 {
			t.Errorf("nodes = %+v, %v", nodes, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	s := open(t, Normal)
	ctx := context.Background()
	now := time.Now()
	s.Update(ctx, func(tx *Tx) error { _, err := tx.CreateUser("bob", false, now); return err })
	err := s.Update(ctx, func(tx *Tx) error { _, err := tx.CreateUser("bob", false, now); return err })
	if !errors.Is(err, ErrExists) {
		t.Errorf("duplicate user: %v", err)
	}
	err = s.View(ctx, func(tx *Tx) error { _, err := tx.TokenByHash("nope"); return err })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("missing token: %v", err)
	}
	// Revoked tokens are gone.
	s.Update(ctx, func(tx *Tx) error {
		u, _ := tx.UserByName("bob")
		tx.AddToken("h", Token{Kind: UserToken, UserID: u.ID}, now)
		return tx.RevokeTokens(UserToken, u.ID, 0, now)
	})
	err = s.View(ctx, func(tx *Tx) error { _, err := tx.TokenByHash("h"); return err })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("revoked token: %v", err)
	}
	if _, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "x.db"), "FAST"); err == nil {
		t.Error("accepted durability FAST")
	}
}

// BenchmarkCommit is the floor of a durable write: one small transaction.
func BenchmarkCommit(b *testing.B) {
	for _, d := range []Durability{Full, Normal} {
		b.Run(string(d), func(b *testing.B) {
			s := open(b, d)
			ctx := context.Background()
			i := 0
			for b.Loop() {
				i++
				err := s.Update(ctx, func(tx *Tx) error { _, err := tx.CreateUser(fmt.Sprint("u", i), false, time.Now()); return err })
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}
