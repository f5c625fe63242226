package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// User is an account that owns servers.
type User struct {
	ID       int64
	Name     string
	Admin    bool
	Priority int
}

// Server is a user's CPU server and its accelerator.
type Server struct {
	ID               int64
	UserID           int64
	UserName         string
	Name             string
	Model            string
	AcceleratorToken string
	CreatedAt        time.Time
}

// TokenKind says what a token acts for.
type TokenKind string

// The token kinds.
const (
	UserToken   TokenKind = "user"
	ServerToken TokenKind = "server"
	NodeToken   TokenKind = "node"
)

// Token is a stored credential, known by its hash only.
type Token struct {
	Kind     TokenKind
	UserID   int64
	ServerID int64
}

// CreateUser adds a user and returns its id.
func (t *Tx) CreateUser(name string, admin bool, now time.Time) (int64, error) {
	r, err := t.exec(`INSERT INTO users (name, admin, created_at) VALUES (?, ?, ?)`, name, admin, nanos(now))
	if err != nil {
		return 0, fmt.Errorf("store: create user %q: %w", name, err)
	}
	return r.LastInsertId()
}

// UserByName returns the user with that name.
func (t *Tx) UserByName(name string) (User, error) {
	return t.user(`WHERE name = ?`, name)
}

// UserByID returns the user with that id.
func (t *Tx) UserByID(id int64) (User, error) {
	return t.user(`WHERE id = ?`, id)
}

func (t *Tx) user(where string, arg any) (User, error) {
	var u User
	err := t.tx.QueryRowContext(t.ctx, `SELECT id, name, admin, priority FROM users `+where, arg).
		Scan(&u.ID, &u.Name, &u.Admin, &u.Priority)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	return u, err
}

// AddToken stores a token's hash.
func (t *Tx) AddToken(hash string, tok Token, now time.Time) error {
	_, err := t.exec(`INSERT INTO tokens (hash, kind, user_id, server_id, created_at) VALUES (?, ?, ?, ?, ?)`,
		hash, string(tok.Kind), nullID(tok.UserID), nullID(tok.ServerID), nanos(now))
	return err
}

// RevokeTokens revokes every token of a kind for a user or server.
func (t *Tx) RevokeTokens(kind TokenKind, userID, serverID int64, now time.Time) error {
	_, err := t.exec(`UPDATE tokens SET revoked_at = ? WHERE kind = ? AND COALESCE(user_id, 0) = ? AND COALESCE(server_id, 0) = ? AND revoked_at IS NULL`,
		nanos(now), string(kind), userID, serverID)
	return err
}

// TokenByHash returns the live token with that hash.
func (t *Tx) TokenByHash(hash string) (Token, error) {
	var tok Token
	var kind string
	var user, server sql.NullInt64
	err := t.tx.QueryRowContext(t.ctx, `SELECT kind, user_id, server_id FROM tokens WHERE hash = ? AND revoked_at IS NULL`, hash).
		Scan(&kind, &user, &server)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	tok.Kind, tok.UserID, tok.ServerID = TokenKind(kind), user.Int64, server.Int64
	return tok, err
}

func nullID(id int64) sql.NullInt64 { return sql.NullInt64{Int64: id, Valid: id != 0} }

// CreateServer adds a server and returns its id.
func (t *Tx) CreateServer(s Server) (int64, error) {
	r, err := t.exec(`INSERT INTO servers (user_id, name, model, accelerator_token, created_at) VALUES (?, ?, ?, ?, ?)`,
		s.UserID, s.Name, s.Model, s.AcceleratorToken, nanos(s.CreatedAt))
	if err != nil {
		return 0, fmt.Errorf("store: create server %q: %w", s.Name, err)
	}
	return r.LastInsertId()
}

const serverColumns = `s.id, s.user_id, u.name, s.name, s.model, s.accelerator_token, s.created_at FROM servers s JOIN users u ON u.id = s.user_id`

func scanServer(row interface{ Scan(...any) error }) (Server, error) {
	var s Server
	var created int64
	err := row.Scan(&s.ID, &s.UserID, &s.UserName, &s.Name, &s.Model, &s.AcceleratorToken, &created)
	s.CreatedAt = time.Unix(0, created)
	return s, err
}

// ServerByID returns the server with that id.
func (t *Tx) ServerByID(id int64) (Server, error) {
	s, err := scanServer(t.tx.QueryRowContext(t.ctx, `SELECT `+serverColumns+` WHERE s.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Server{}, ErrNotFound
	}
	return s, err
}

// ServerByName returns a user's server by name.
func (t *Tx) ServerByName(userID int64, name string) (Server, error) {
	s, err := scanServer(t.tx.QueryRowContext(t.ctx, `SELECT `+serverColumns+` WHERE s.user_id = ? AND s.name = ?`, userID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Server{}, ErrNotFound
	}
	return s, err
}

// Servers lists a user's servers, or every server when userID is 0.
func (t *Tx) Servers(userID int64) ([]Server, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT `+serverColumns+` WHERE ? = 0 OR s.user_id = ? ORDER BY u.name, s.name`, userID, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Server
	for rows.Next() {
		s, err := scanServer(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// SetServerModel changes a server's accelerator model.
func (t *Tx) SetServerModel(id int64, model string) error {
	_, err := t.exec(`UPDATE servers SET model = ? WHERE id = ?`, model, id)
	return err
}
