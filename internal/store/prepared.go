package store

import (
	"context"
	"database/sql"
	"regexp"
	"sync"
)

// statements prepares each query once per database and keeps it: SQLite
// parses a statement in about as long as it runs one, and the control
// plane runs the same few dozen over and over.
type statements struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*statement
	// missed are queries run unprepared inside a transaction, to prepare
	// once it ends: the writer has one connection, and the transaction
	// holds it.
	missed map[string]bool
}

type statement struct {
	*sql.Stmt
	// accounts: the statement may write tokens, users or servers, what
	// a request's principal and server are read from
	// (Store.AccountsGeneration).
	accounts bool
}

// maxStatements bounds the cache; queries built from variable parts
// (Jobs' state lists) have few shapes, and past the bound they are run
// unprepared.
const maxStatements = 256

var accountTables = regexp.MustCompile(`(?i)\b(tokens|users|servers|keypairs)\b`)

func newStatements(db *sql.DB) *statements {
	return &statements{db: db, m: map[string]*statement{}, missed: map[string]bool{}}
}

// get returns the prepared statement for q, or nil when it is not
// prepared yet (prepareMissed will) or the cache is full.
func (s *statements) get(q string) *statement {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.m[q]; ok {
		return st
	}
	if len(s.m)+len(s.missed) < maxStatements {
		s.missed[q] = true
	}
	return nil
}

// prepareMissed prepares what get missed. It runs after a transaction,
// and prepares without holding mu: the writer's one connection may be
// another transaction's, which may need mu meanwhile. A query that fails
// to prepare is left to fail where it runs.
func (s *statements) prepareMissed(ctx context.Context) {
	s.mu.Lock()
	var qs []string
	for q := range s.missed {
		qs = append(qs, q)
	}
	clear(s.missed)
	s.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	for _, q := range qs {
		prepared, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		s.mu.Lock()
		if _, ok := s.m[q]; ok {
			prepared.Close() // another transaction's end prepared it too
		} else {
			s.m[q] = &statement{Stmt: prepared, accounts: accountTables.MatchString(q)}
		}
		s.mu.Unlock()
	}
}

// stmt returns q as a statement of t's transaction, or nil when it is not
// prepared; accounts says whether it may write tokens, users or servers.
func (t *Tx) stmt(q string) (st *sql.Stmt, accounts bool) {
	if p := t.stmts.get(q); p != nil {
		return t.tx.StmtContext(t.ctx, p.Stmt), p.accounts
	}
	return nil, accountTables.MatchString(q)
}

func (t *Tx) queryRow(q string, args ...any) *sql.Row {
	if st, _ := t.stmt(q); st != nil {
		return st.QueryRowContext(t.ctx, args...)
	}
	return t.tx.QueryRowContext(t.ctx, q, args...)
}

func (t *Tx) query(q string, args ...any) (*sql.Rows, error) {
	if st, _ := t.stmt(q); st != nil {
		return st.QueryContext(t.ctx, args...)
	}
	return t.tx.QueryContext(t.ctx, q, args...)
}

func (s *statements) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.m {
		st.Close()
	}
	clear(s.m)
}

// queryOnce runs q unprepared and does not keep it: for queries whose
// shape varies with their arguments (IN lists), which a caller could
// otherwise use to fill the cache with one-off statements.
func (t *Tx) queryOnce(q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(t.ctx, q, args...)
}
