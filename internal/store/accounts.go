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

// Server is a user's CPU server and its accelerator: a machine registered
// with hac (kind registered) or one a server driver runs (kind vm).
type Server struct {
	ID               int64
	UserID           int64
	UserName         string
	Name             string
	Model            string
	AcceleratorToken string
	CreatedAt        time.Time

	Kind           ServerKind
	State          ServerState
	StateReason    string
	Zone           string
	Tier           string
	Type           string
	Image          string
	KeyPairID      int64
	KeyPairName    string
	PrivateIP      string
	ReferenceModel string
}

// ServerKind says who runs a server: its user (registered) or hac (vm).
type ServerKind string

// The server kinds.
const (
	KindRegistered ServerKind = "registered"
	KindVM         ServerKind = "vm"
)

// ServerState is where a server is in its life. A registered server is
// always ServerRegistered; a vm server goes
//
//	creating --> running <--> stopped
//	    '--------'---> error    any --> deleting --> deleted
//
// The values are the API's and the CLI's words.
type ServerState string

// The server states.
const (
	ServerRegistered ServerState = "registered"
	ServerCreating   ServerState = "creating"
	ServerRunning    ServerState = "running"
	ServerStopped    ServerState = "stopped"
	ServerError      ServerState = "error"
	ServerDeleting   ServerState = "deleting"
	ServerDeleted    ServerState = "deleted"
)

// TokenKind says what a token acts for.
type TokenKind string

// The token kinds.
const (
	UserToken   TokenKind = "user"
	ServerToken TokenKind = "server"
	NodeToken   TokenKind = "node"
	// JoinToken is a node's one-time enrollment (hac node add), traded
	// for a NodeToken of the same node.
	JoinToken TokenKind = "join"
)

// Token is a stored credential, known by its hash only.
type Token struct {
	Kind     TokenKind
	UserID   int64
	ServerID int64
	// Node is the node a node or join token is bound to.
	Node string
	// Expires, when set, ends the token.
	Expires time.Time
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
	err := t.queryRow(`SELECT id, name, admin, priority FROM users `+where, arg).
		Scan(&u.ID, &u.Name, &u.Admin, &u.Priority)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	return u, err
}

// AddToken stores a token's hash.
func (t *Tx) AddToken(hash string, tok Token, now time.Time) error {
	var node sql.NullString
	var expires sql.NullInt64
	if tok.Node != "" {
		node = sql.NullString{String: tok.Node, Valid: true}
	}
	if !tok.Expires.IsZero() {
		expires = sql.NullInt64{Int64: nanos(tok.Expires), Valid: true}
	}
	_, err := t.exec(`INSERT INTO tokens (hash, kind, user_id, server_id, node_name, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		hash, string(tok.Kind), nullID(tok.UserID), nullID(tok.ServerID), node, expires, nanos(now))
	return err
}

// RevokeNodeTokens revokes every token bound to a node; with kind set,
// only tokens of that kind.
func (t *Tx) RevokeNodeTokens(node string, kind TokenKind, now time.Time) error {
	_, err := t.exec(`UPDATE tokens SET revoked_at = ? WHERE node_name = ? AND (? = '' OR kind = ?) AND revoked_at IS NULL`,
		nanos(now), node, string(kind), string(kind))
	return err
}

// RevokeToken revokes one live token (a join token as it is used); it
// returns ErrNotFound when the token was revoked already, so that two
// uses racing each other cannot both succeed.
func (t *Tx) RevokeToken(hash string, now time.Time) error {
	r, err := t.exec(`UPDATE tokens SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL`, nanos(now), hash)
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil || n != 1 {
		return ErrNotFound
	}
	return nil
}

// NodeEnrolled reports whether a node has a live credential.
func (t *Tx) NodeEnrolled(node string) (bool, error) {
	var n int
	err := t.queryRow(`SELECT COUNT(*) FROM tokens WHERE node_name = ? AND kind = ? AND revoked_at IS NULL`, node, string(NodeToken)).Scan(&n)
	return n > 0, err
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
	var user, server, expires sql.NullInt64
	var node sql.NullString
	err := t.queryRow(`SELECT kind, user_id, server_id, node_name, expires_at FROM tokens WHERE hash = ? AND revoked_at IS NULL`, hash).
		Scan(&kind, &user, &server, &node, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	tok.Kind, tok.UserID, tok.ServerID, tok.Node = TokenKind(kind), user.Int64, server.Int64, node.String
	if expires.Valid {
		tok.Expires = time.Unix(0, expires.Int64)
	}
	return tok, err
}

func nullID(id int64) sql.NullInt64 { return sql.NullInt64{Int64: id, Valid: id != 0} }

// CreateServer adds a server and returns its id.
func (t *Tx) CreateServer(s Server) (int64, error) {
	if s.Kind == "" {
		s.Kind, s.State = KindRegistered, ServerRegistered
	}
	var ip sql.NullString
	if s.PrivateIP != "" {
		ip = sql.NullString{String: s.PrivateIP, Valid: true}
	}
	r, err := t.exec(`INSERT INTO servers (user_id, name, model, accelerator_token, created_at, kind, state, state_reason, zone, tier,
		server_type, image, keypair_id, private_ip, reference_model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.UserID, s.Name, s.Model, s.AcceleratorToken, nanos(s.CreatedAt), s.Kind, s.State, s.StateReason, s.Zone, s.Tier,
		s.Type, s.Image, nullID(s.KeyPairID), ip, s.ReferenceModel)
	if err != nil {
		return 0, fmt.Errorf("store: create server %q: %w", s.Name, err)
	}
	id, err := r.LastInsertId()
	if err != nil {
		return 0, err
	}
	return id, t.meterServer(id, s.State, s.CreatedAt)
}

const serverColumns = `s.id, s.user_id, u.name, s.name, s.model, s.accelerator_token, s.created_at, s.kind, s.state, s.state_reason,
	s.zone, s.tier, s.server_type, s.image, COALESCE(s.keypair_id, 0), COALESCE(k.name, ''), COALESCE(s.private_ip, ''), s.reference_model
	FROM servers s JOIN users u ON u.id = s.user_id LEFT JOIN keypairs k ON k.id = s.keypair_id`

func scanServer(row interface{ Scan(...any) error }) (Server, error) {
	var s Server
	var created int64
	err := row.Scan(&s.ID, &s.UserID, &s.UserName, &s.Name, &s.Model, &s.AcceleratorToken, &created, &s.Kind, &s.State, &s.StateReason,
		&s.Zone, &s.Tier, &s.Type, &s.Image, &s.KeyPairID, &s.KeyPairName, &s.PrivateIP, &s.ReferenceModel)
	s.CreatedAt = time.Unix(0, created)
	return s, err
}

// ServerByID returns the server with that id.
func (t *Tx) ServerByID(id int64) (Server, error) {
	s, err := scanServer(t.queryRow(`SELECT `+serverColumns+` WHERE s.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Server{}, ErrNotFound
	}
	return s, err
}

// ServerByName returns a user's server by name.
func (t *Tx) ServerByName(userID int64, name string) (Server, error) {
	s, err := scanServer(t.queryRow(`SELECT `+serverColumns+` WHERE s.user_id = ? AND s.name = ?`, userID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Server{}, ErrNotFound
	}
	return s, err
}

// Servers lists a user's servers, or every server when userID is 0;
// deleted servers are left out.
func (t *Tx) Servers(userID int64) ([]Server, error) {
	rows, err := t.query(`SELECT `+serverColumns+` WHERE (? = 0 OR s.user_id = ?) AND s.state != 'deleted' ORDER BY u.name, s.name`, userID, userID)
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

// SetServerState records a vm server's state and why, at at, and meters
// it from then at the state's price.
func (t *Tx) SetServerState(id int64, state ServerState, reason string, at time.Time) error {
	if _, err := t.exec(`UPDATE servers SET state = ?, state_reason = ? WHERE id = ?`, state, reason, id); err != nil {
		return err
	}
	return t.meterServer(id, state, at)
}

// MarkServerDeleted ends a server for good: its name is freed for reuse,
// its address returned, and its row kept for the jobs that cite it.
func (t *Tx) MarkServerDeleted(id int64, at time.Time) error {
	if _, err := t.exec(`UPDATE servers SET state = 'deleted', state_reason = '', name = name || '~deleted~' || id, private_ip = NULL, keypair_id = NULL WHERE id = ?`, id); err != nil {
		return err
	}
	return t.meterServer(id, ServerDeleted, at)
}

// UsedPrivateIPs returns the addresses servers hold.
func (t *Tx) UsedPrivateIPs() (map[string]bool, error) {
	rows, err := t.query(`SELECT private_ip FROM servers WHERE private_ip IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	used := map[string]bool{}
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			return nil, err
		}
		used[ip] = true
	}
	return used, rows.Err()
}

// ServersUsingKeyPair counts the live servers made with a key pair.
func (t *Tx) ServersUsingKeyPair(keyPairID int64) ([]string, error) {
	rows, err := t.query(`SELECT name FROM servers WHERE keypair_id = ? AND state != 'deleted' ORDER BY name`, keyPairID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// SetServerModel changes a server's accelerator model.
func (t *Tx) SetServerModel(id int64, model string) error {
	_, err := t.exec(`UPDATE servers SET model = ? WHERE id = ?`, model, id)
	return err
}
