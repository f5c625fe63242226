package controlplane

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/guard"
	"github.com/hac-project/hac/internal/meter"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/vm"
)

// Config configures a control plane.
type Config struct {
	// Listen is the API address, host:port; port 0 picks a free one.
	Listen string
	// DataDir holds the database and the first-run credentials.
	DataDir string
	// Durability of commits; store.Full by default.
	Durability store.Durability
	// LeaseTTL is how long a granted job lives without a renewal.
	LeaseTTL time.Duration
	// SuspendedLease is how long it lives after its client asked for a
	// suspended lease (Ctrl+Z): the GPUs stay held, and billed.
	SuspendedLease time.Duration
	// NodeLostAfter is how long a node may miss heartbeats before it is
	// declared lost and its jobs fail.
	NodeLostAfter time.Duration
	// HeartbeatInterval is what agents are told to use.
	HeartbeatInterval time.Duration
	// TicketTTL is how long a worker ticket stays valid after the grant.
	TicketTTL time.Duration
	Catalog   catalog.Catalog
	// DefaultModel is the model of a server registered without one.
	DefaultModel string
	// Servers runs users' servers (SPEC S2); nil disables server creation.
	Servers ServerDriver
	// PublicPorts is the range port forwards may use on the public address.
	PublicPorts [2]int
	// ConnLimits caps open connections to the API, in all and per peer.
	ConnLimits guard.Limits
	// Quotas bound what one user may hold; an operator raises them.
	Quotas Quotas
	// Currency is what prices and charges are counted in: chosen at the
	// first start (meter.DefaultCurrency when it has no code) and kept,
	// as stored amounts are its minor units.
	Currency meter.Currency
	// DisplayZone is the operator's time zone, for showing the meter's
	// times (which it keeps in UTC); UTC when nil.
	DisplayZone *time.Location
	// TLS is where the API's certificate comes from.
	TLS    TLSConfig
	Logger *slog.Logger
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// DefaultConfig returns the configuration of a plain hac serve.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:7470",
		DataDir:           "hac-data",
		Durability:        store.Full,
		LeaseTTL:          30 * time.Second,
		SuspendedLease:    time.Hour,
		NodeLostAfter:     15 * time.Second,
		HeartbeatInterval: 2 * time.Second,
		TicketTTL:         60 * time.Second,
		Catalog:           catalog.Default(),
		DefaultModel:      "small.16gb",
		PublicPorts:       [2]int{10000, 19999},
		ConnLimits:        guard.DefaultLimits,
		Quotas:            DefaultQuotas,
		Logger:            slog.Default(),
		Now:               time.Now,
	}
}

// Quotas bound what one user may hold at once; 0 means no bound.
type Quotas struct {
	// WaitingJobs are runs waiting for the pool or their accelerator.
	WaitingJobs int
	// Servers are servers made or registered, and PortForwards the port
	// forwarding rules over all of them.
	Servers, PortForwards int
}

// DefaultQuotas are generous for a person and small for a flood.
var DefaultQuotas = Quotas{WaitingJobs: 1000, Servers: 100, PortForwards: 200}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("controlplane: --listen is empty: give host:port, such as 127.0.0.1:7470")
	case c.DataDir == "":
		return errors.New("controlplane: --data-dir is empty: give a directory for the database")
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("controlplane: lease TTL %v is too short: use at least 1s", c.LeaseTTL)
	case c.SuspendedLease < 0 || c.SuspendedLease > 7*24*time.Hour:
		return fmt.Errorf("controlplane: suspended lease %v: use at most 168h (never less than the lease TTL is used)", c.SuspendedLease)
	case c.HeartbeatInterval <= 0 || c.LeaseTTL < 2*c.HeartbeatInterval:
		return fmt.Errorf("controlplane: lease TTL %v must be at least twice the heartbeat interval %v (heartbeats keep detached jobs' leases)", c.LeaseTTL, c.HeartbeatInterval)
	case c.NodeLostAfter < 2*c.HeartbeatInterval:
		return fmt.Errorf("controlplane: node-lost timeout %v must be at least twice the heartbeat interval %v", c.NodeLostAfter, c.HeartbeatInterval)
	case c.TicketTTL <= 0:
		return errors.New("controlplane: ticket TTL must be positive")
	case len(c.Catalog) == 0:
		return errors.New("controlplane: the model catalog is empty")
	case c.PublicPorts[0] < 1 || c.PublicPorts[1] > 65535 || c.PublicPorts[0] > c.PublicPorts[1]:
		return fmt.Errorf("controlplane: public port range %d-%d: want 1 <= low <= high <= 65535", c.PublicPorts[0], c.PublicPorts[1])
	case c.Quotas.WaitingJobs < 0 || c.Quotas.Servers < 0 || c.Quotas.PortForwards < 0:
		return errors.New("controlplane: quotas must not be negative (0 means no bound)")
	case c.Logger == nil || c.Now == nil:
		return errors.New("controlplane: Logger and Now must be set (start from DefaultConfig)")
	}
	if _, err := c.Catalog.Lookup(c.DefaultModel); err != nil {
		return fmt.Errorf("controlplane: default model: %w", err)
	}
	return nil
}

// ServerDriver is a server driver with the network facts the control plane
// needs: the subnet it hands out addresses from, the gateway where servers
// reach the API, and the public address of port forwards.
type ServerDriver interface {
	vm.Driver
	Gateway() string
	Subnet() *net.IPNet
	PublicAddress() string
	// Images names the images servers can be made from, with descriptions.
	Images() map[string]string
	DefaultImage() string
	// PublicPortInUse reports whether a host process listens on the public
	// address's port (protocol tcp or udp), which a forward would take.
	PublicPortInUse(protocol string, port int) bool
	// Close stops long work in progress (image builds) at shutdown.
	Close()
	// ImageDigest names an image's root for GPU nodes (package image),
	// which WriteImage streams; ImageSharesHostUsr says that its servers
	// see the host's /usr, so their jobs see the node's.
	ImageDigest(name string) (string, error)
	// ImageDigests are the digests of the images built, which nodes
	// fetch ahead of jobs.
	ImageDigests() []string
	ImageSharesHostUsr(name string) bool
	WriteImage(digest string, w io.Writer) error
}
