package cli

import (
	"connectrpc.com/connect"

	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
)

// client is a connection to the control plane.
type client struct {
	cfg     Config
	acc     hacv1connect.AcceleratorServiceClient
	pool    hacv1connect.PoolServiceClient
	servers hacv1connect.ServerServiceClient
	keys    hacv1connect.KeyPairServiceClient
	portal  hacv1connect.PortalServiceClient
	users   hacv1connect.UserServiceClient
	catalog hacv1connect.CatalogServiceClient
}

// client resolves the configuration and connects.
func (a *app) client() (*client, error) {
	cfg, err := resolveConfig(a.addr, a.token, a.caPin, a.server, a.getenv)
	if err != nil {
		return nil, err
	}
	h := apiclient.New(cfg.CAPin)
	opts := connect.WithInterceptors(apiclient.Bearer(cfg.Token))
	return &client{
		cfg:     cfg,
		acc:     hacv1connect.NewAcceleratorServiceClient(h, cfg.Addr, opts),
		pool:    hacv1connect.NewPoolServiceClient(h, cfg.Addr, opts),
		servers: hacv1connect.NewServerServiceClient(h, cfg.Addr, opts),
		keys:    hacv1connect.NewKeyPairServiceClient(h, cfg.Addr, opts),
		portal:  hacv1connect.NewPortalServiceClient(h, cfg.Addr, opts),
		users:   hacv1connect.NewUserServiceClient(h, cfg.Addr, opts),
		catalog: hacv1connect.NewCatalogServiceClient(h, cfg.Addr, opts),
	}, nil
}
