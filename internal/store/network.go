package store

import (
	"fmt"
	"time"
)

// PortForward maps a public port to a server's private port.
type PortForward struct {
	ID          int64
	ServerID    int64
	ServerName  string
	UserID      int64
	PrivateIP   string
	Protocol    string
	PublicPort  int
	PrivatePort int
	CreatedAt   time.Time
}

// FirewallRule opens a public port to a source CIDR.
type FirewallRule struct {
	ID         int64
	ServerID   int64
	ServerName string
	UserID     int64
	Protocol   string
	Port       int
	Source     string
	CreatedAt  time.Time
}

// AddPortForward stores a forward; a taken public port is ErrExists.
func (t *Tx) AddPortForward(f PortForward) (int64, error) {
	r, err := t.exec(`INSERT INTO port_forwards (server_id, protocol, public_port, private_port, created_at) VALUES (?, ?, ?, ?, ?)`,
		f.ServerID, f.Protocol, f.PublicPort, f.PrivatePort, nanos(f.CreatedAt))
	if err != nil {
		return 0, fmt.Errorf("public port %d/%s: %w", f.PublicPort, f.Protocol, err)
	}
	return r.LastInsertId()
}

// PortForwards lists forwards, of one user (0: all) and one server (0:
// all), by public port.
func (t *Tx) PortForwards(userID, serverID int64) ([]PortForward, error) {
	rows, err := t.query(`SELECT f.id, f.server_id, s.name, s.user_id, COALESCE(s.private_ip, ''), f.protocol, f.public_port,
		f.private_port, f.created_at FROM port_forwards f JOIN servers s ON s.id = f.server_id
		WHERE (? = 0 OR s.user_id = ?) AND (? = 0 OR f.server_id = ?) ORDER BY f.public_port, f.protocol`, userID, userID, serverID, serverID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PortForward
	for rows.Next() {
		var f PortForward
		var created int64
		if err := rows.Scan(&f.ID, &f.ServerID, &f.ServerName, &f.UserID, &f.PrivateIP, &f.Protocol, &f.PublicPort, &f.PrivatePort, &created); err != nil {
			return nil, err
		}
		f.CreatedAt = time.Unix(0, created)
		out = append(out, f)
	}
	return out, rows.Err()
}

// DeletePortForward removes a user's forward.
func (t *Tx) DeletePortForward(userID, id int64) error {
	return t.deleteOwned(`port_forwards`, userID, id)
}

// AddFirewallRule stores a rule.
func (t *Tx) AddFirewallRule(r FirewallRule) (int64, error) {
	res, err := t.exec(`INSERT INTO firewall_rules (server_id, protocol, port, source, created_at) VALUES (?, ?, ?, ?, ?)`,
		r.ServerID, r.Protocol, r.Port, r.Source, nanos(r.CreatedAt))
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// FirewallRules lists rules like PortForwards does.
func (t *Tx) FirewallRules(userID, serverID int64) ([]FirewallRule, error) {
	rows, err := t.query(`SELECT r.id, r.server_id, s.name, s.user_id, r.protocol, r.port, r.source, r.created_at
		FROM firewall_rules r JOIN servers s ON s.id = r.server_id
		WHERE (? = 0 OR s.user_id = ?) AND (? = 0 OR r.server_id = ?) ORDER BY r.port, r.protocol, r.id`, userID, userID, serverID, serverID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []FirewallRule
	for rows.Next() {
		var r FirewallRule
		var created int64
		if err := rows.Scan(&r.ID, &r.ServerID, &r.ServerName, &r.UserID, &r.Protocol, &r.Port, &r.Source, &created); err != nil {
			return nil, err
		}
		r.CreatedAt = time.Unix(0, created)
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeleteFirewallRule removes a user's rule.
func (t *Tx) DeleteFirewallRule(userID, id int64) error {
	return t.deleteOwned(`firewall_rules`, userID, id)
}

// DeleteServerNetwork removes every forward and rule of a server.
func (t *Tx) DeleteServerNetwork(serverID int64) error {
	if _, err := t.exec(`DELETE FROM port_forwards WHERE server_id = ?`, serverID); err != nil {
		return err
	}
	_, err := t.exec(`DELETE FROM firewall_rules WHERE server_id = ?`, serverID)
	return err
}

// deleteOwned deletes row id of table if one of the user's servers owns it.
func (t *Tx) deleteOwned(table string, userID, id int64) error {
	r, err := t.exec(`DELETE FROM `+table+` WHERE id = ? AND server_id IN (SELECT id FROM servers WHERE user_id = ?)`, id, userID)
	if err != nil {
		return err
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
