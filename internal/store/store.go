package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/hac-project/hac/internal/meter"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

//go:embed migrations/sqlite/*.sql
var migrations embed.FS

var (
	// ErrNotFound is returned when a row does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrExists is returned when a unique name is already taken.
	ErrExists = errors.New("store: already exists")
)

// Store is the control plane's database.
type Store struct {
	db  *sql.DB // the one writer
	rdb *sql.DB // readers: WAL lets them run beside the writer
	// Each database's statements, prepared once.
	stmts, rstmts *statements
	// accounts counts commits that wrote tokens, users or servers.
	accounts atomic.Uint64
	group    group
	// metered is told of the meter's pieces each commit closed.
	metered func([]Metered)
	prices  priceCache
}

// Durability says how hard a commit is pushed to disk.
type Durability string

const (
	// Full syncs every commit to disk (SQLite synchronous=FULL).
	Full Durability = "FULL"
	// Normal syncs at WAL checkpoints; a power loss may drop the last
	// commits, a process crash does not (SQLite synchronous=NORMAL).
	Normal Durability = "NORMAL"
)

// OpenSQLite opens (creating if needed) the SQLite database at path and
// brings its schema up to date.
func OpenSQLite(ctx context.Context, path string, d Durability) (*Store, error) {
	if d != Full && d != Normal {
		return nil, fmt.Errorf("store: durability %q: want FULL or NORMAL", d)
	}
	// The database holds every tenant's data: the control plane's user
	// only. SQLite gives its -wal and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	dsn := fmt.Sprintf("file:%s?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(%s)", path, d)
	db, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: SQLite has one writer, and a single connection keeps
	// transactions strictly serial without busy retries.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	sub, err := fs.Sub(migrations, "migrations/sqlite")
	if err != nil {
		db.Close()
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: migrate %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		db.Close()
		return nil, err
	}
	rdb.SetMaxOpenConns(4)
	s := &Store{db: db, rdb: rdb, stmts: newStatements(db), rstmts: newStatements(rdb), prices: priceCache{m: map[[2]string]meter.Schedule{}}}
	s.group.idle = sync.NewCond(&s.group.mu)
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.group.waitIdle()
	s.stmts.close()
	s.rstmts.close()
	s.rdb.Close()
	return s.db.Close()
}

// AccountsGeneration counts the commits that wrote tokens, users or
// servers, after they committed: what was read from those tables while it
// stood still may be kept, until it moves.
func (s *Store) AccountsGeneration() uint64 { return s.accounts.Load() }

// Tx is one transaction.
type Tx struct {
	tx    *sql.Tx
	ctx   context.Context
	stmts *statements
	// accounts: a write touched tokens, users or servers.
	accounts bool
	// metered: the pieces of the meter records the transaction closed.
	metered []Metered
	// prices is the writer's cache of price schedules (nil in reads);
	// pricesWritten: the transaction set a price, and reads them afresh.
	prices        *priceCache
	pricesWritten bool
}

// Update runs fn in one transaction and commits it if fn returns nil.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	t := &Tx{tx: tx, ctx: ctx, stmts: s.stmts, prices: &s.prices}
	ended := false
	defer func() {
		if !ended {
			tx.Rollback() // fn panicked: give the one connection back
		}
	}()
	err = fn(t)
	if err != nil {
		tx.Rollback()
	} else if err = tx.Commit(); err != nil {
		err = fmt.Errorf("store: commit: %w", err)
	}
	ended = true
	if err == nil && len(t.metered) > 0 && s.metered != nil {
		s.metered(t.metered)
	}
	if t.accounts {
		// Even after a failed commit: what it wrote may have reached the
		// disk, and a needless flush of a cache costs little.
		s.accounts.Add(1)
	}
	s.stmts.prepareMissed(ctx) // the connection is free again
	return err
}

// View runs fn in a read transaction.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) error {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer s.rstmts.prepareMissed(ctx)
	defer tx.Rollback()
	return fn(&Tx{tx: tx, ctx: ctx, stmts: s.rstmts})
}

func (t *Tx) exec(query string, args ...any) (sql.Result, error) {
	st, accounts := t.stmt(query)
	t.accounts = t.accounts || accounts
	var r sql.Result
	var err error
	if st != nil {
		r, err = st.ExecContext(t.ctx, args...)
	} else {
		r, err = t.tx.ExecContext(t.ctx, query, args...)
	}
	if err != nil && isUniqueViolation(err) {
		return nil, ErrExists
	}
	return r, err
}

func isUniqueViolation(err error) bool {
	type coder interface{ Code() int }
	var c coder
	// SQLITE_CONSTRAINT_UNIQUE = 2067, SQLITE_CONSTRAINT_PRIMARYKEY = 1555.
	return errors.As(err, &c) && (c.Code() == 2067 || c.Code() == 1555)
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64)
}
