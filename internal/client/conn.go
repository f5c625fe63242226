package client

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/catalog"
)

// Config is what a client needs to reach the control plane.
type Config struct {
	Addr   string // control plane URL
	Token  string
	Server string // default server for user tokens
	// CAPin names the CA the control plane's certificate is from
	// (sha256:HEX); empty trusts the system's roots.
	CAPin string
	// Source says where Addr came from, for messages.
	Source string
}

// Conn is a connection to the control plane, one client per service.
type Conn struct {
	Config
	Accel    hacv1connect.AcceleratorServiceClient
	Pool     hacv1connect.PoolServiceClient
	Servers  hacv1connect.ServerServiceClient
	KeyPairs hacv1connect.KeyPairServiceClient
	Portal   hacv1connect.PortalServiceClient
	Users    hacv1connect.UserServiceClient
	Catalog  hacv1connect.CatalogServiceClient
	Billing  hacv1connect.BillingServiceClient
}

// Dial returns a connection for cfg; nothing is sent until the first call.
func Dial(cfg Config) *Conn {
	h := apiclient.New(cfg.CAPin)
	opts := connect.WithInterceptors(apiclient.Bearer(cfg.Token))
	return &Conn{
		Config:   cfg,
		Accel:    hacv1connect.NewAcceleratorServiceClient(h, cfg.Addr, opts),
		Pool:     hacv1connect.NewPoolServiceClient(h, cfg.Addr, opts),
		Servers:  hacv1connect.NewServerServiceClient(h, cfg.Addr, opts),
		KeyPairs: hacv1connect.NewKeyPairServiceClient(h, cfg.Addr, opts),
		Portal:   hacv1connect.NewPortalServiceClient(h, cfg.Addr, opts),
		Users:    hacv1connect.NewUserServiceClient(h, cfg.Addr, opts),
		Catalog:  hacv1connect.NewCatalogServiceClient(h, cfg.Addr, opts),
		Billing:  hacv1connect.NewBillingServiceClient(h, cfg.Addr, opts),
	}
}

// Worker connects to the node of a grant or of OpenJob, accepting only the
// node's current worker certificate.
func Worker(w *hacv1.Worker) (hacv1connect.WorkerServiceClient, error) {
	if w.GetCaPin() == "" || w.GetKeyPin() == "" {
		return nil, fmt.Errorf("the control plane named no certificate for node %s: upgrade hac serve", w.GetNode())
	}
	// No gzip: on these links it costs more than it saves.
	return hacv1connect.NewWorkerServiceClient(apiclient.Worker(w.CaPin, w.KeyPin, w.Node), "https://"+w.Address,
		connect.WithAcceptCompression("gzip", nil, nil)), nil
}

// Message turns an API error into text for the user.
func Message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnavailable:
			return "cannot reach the hac control plane: " + ce.Message() + " (is hac serve running? check HAC_ADDR or your config)"
		}
		return ce.Message()
	}
	return err.Error()
}

// lostNode says a node's stream broke.
func lostNode(node string, err error) error {
	return fmt.Errorf("lost the connection to %s on %s: %v", catalog.DisplayName, node, Message(err))
}
