package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// KeyPair is a user's SSH public key.
type KeyPair struct {
	ID            int64
	UserID        int64
	Name          string
	Type          string
	AuthorizedKey string
	Fingerprint   string
	CreatedAt     time.Time
}

// CreateKeyPair stores a key pair's public half.
func (t *Tx) CreateKeyPair(k KeyPair) (int64, error) {
	r, err := t.exec(`INSERT INTO keypairs (user_id, name, type, authorized_key, fingerprint, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		k.UserID, k.Name, k.Type, k.AuthorizedKey, k.Fingerprint, nanos(k.CreatedAt))
	if err != nil {
		return 0, fmt.Errorf("store: key pair %q: %w", k.Name, err)
	}
	return r.LastInsertId()
}

// KeyPairs lists a user's key pairs by name.
func (t *Tx) KeyPairs(userID int64) ([]KeyPair, error) {
	rows, err := t.query(`SELECT id, user_id, name, type, authorized_key, fingerprint, created_at FROM keypairs WHERE user_id = ? ORDER BY name`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []KeyPair
	for rows.Next() {
		var k KeyPair
		var created int64
		if err := rows.Scan(&k.ID, &k.UserID, &k.Name, &k.Type, &k.AuthorizedKey, &k.Fingerprint, &created); err != nil {
			return nil, err
		}
		k.CreatedAt = time.Unix(0, created)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteKeyPair removes a user's key pair by name.
func (t *Tx) DeleteKeyPair(userID int64, name string) error {
	r, err := t.exec(`DELETE FROM keypairs WHERE user_id = ? AND name = ?`, userID, name)
	if err != nil {
		return err
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return fmt.Errorf("key pair %q: %w", name, ErrNotFound)
	}
	return nil
}

// KeyPairByName returns a user's key pair.
func (t *Tx) KeyPairByName(userID int64, name string) (KeyPair, error) {
	var k KeyPair
	var created int64
	err := t.queryRow(`SELECT id, user_id, name, type, authorized_key, fingerprint, created_at FROM keypairs WHERE user_id = ? AND name = ?`, userID, name).
		Scan(&k.ID, &k.UserID, &k.Name, &k.Type, &k.AuthorizedKey, &k.Fingerprint, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return KeyPair{}, fmt.Errorf("key pair %q: %w", name, ErrNotFound)
	}
	k.CreatedAt = time.Unix(0, created)
	return k, err
}
