// Package vm defines how hac runs users' servers: a Driver creates, starts,
// stops and deletes them and applies their port forwarding and firewall
// rules. The local driver (package vm/local) runs each server as a runc
// container with its own network namespace; production drivers (libvirt,
// OpenStack) map onto the same calls one to one.
package vm

import (
	"context"
	"errors"
	"io/fs"
)

// State is what a driver reports of a server.
type State string

// Server states as the driver sees them.
const (
	Running State = "running"
	Stopped State = "stopped" // created, not running
	Missing State = "missing" // unknown to the driver
)

// ErrNotFound is returned for a server the driver does not have.
var ErrNotFound = errors.New("vm: no such server")

// Spec is everything a driver needs to make one server.
type Spec struct {
	// ID names the server in the driver; short, [a-z0-9-].
	ID       string
	Hostname string
	CPUs     int
	// MemoryMiB caps the server's memory.
	MemoryMiB int64
	// DiskBytes bounds what the server may write over its image (its root
	// disk); 0 means no bound.
	DiskBytes int64
	Image     string
	// Address is the server's private IPv4 address in the driver's subnet.
	Address string
	// AuthorizedKeys are the public keys that may log in as ubuntu.
	AuthorizedKeys []string
	// Files are written into the server before it starts.
	Files []File
}

// File is one file placed in a new server.
type File struct {
	Path     string // absolute, in the server
	Mode     fs.FileMode
	UID, GID int
	Data     []byte
}

// Forward is one port forwarding rule with the firewall rules that open
// it. A forward without Allow is closed (default deny).
type Forward struct {
	Protocol    string // tcp or udp
	PublicPort  int
	Address     string // the server's private address
	PrivatePort int
	// Allow lists the source CIDRs that may connect.
	Allow []string
}

// Driver runs servers.
type Driver interface {
	// Create makes the server from spec and starts it.
	Create(ctx context.Context, spec Spec) error
	Start(ctx context.Context, id string) error
	Stop(ctx context.Context, id string) error
	// Delete removes the server and everything the driver made for it; a
	// missing server is not an error.
	Delete(ctx context.Context, id string) error
	Status(ctx context.Context, id string) (State, error)
	// List returns the ids of every server the driver has, running or not.
	List(ctx context.Context) ([]string, error)
	// ApplyRules replaces all forwarding and firewall rules with these.
	ApplyRules(ctx context.Context, rules Rules) error
}

// Rules are the whole network policy of the servers.
type Rules struct {
	Forwards []Forward
	// HostPorts are the TCP ports of the host (on the servers' gateway)
	// that servers may reach: hac's own (the API, agents). Nothing else of
	// the host answers them.
	HostPorts []int
	// Tenants groups the servers by owner: servers of one group reach
	// each other, never a server of another group.
	Tenants [][]Member
}

// Member is a server in Rules.Tenants: its id and private address, which
// is the only source address its traffic may carry.
type Member struct {
	ID, Address string
}
