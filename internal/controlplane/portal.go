package controlplane

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"connectrpc.com/connect"

	"github.com/hac-project/hac/examples"
	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
	"github.com/hac-project/hac/internal/vm"
)

// portalService implements hacv1connect.PortalServiceHandler.
type portalService struct{ s *Server }

// ErrNoDriver is returned when this control plane runs no server driver.
var ErrNoDriver = errors.New("this control plane makes no servers: start hac serve with --servers local (as root), or register an existing machine with hac server register")

// portal holds what server provisioning shares: one rules update at a time,
// and the background work, waited for at shutdown.
type portal struct {
	rulesMu sync.Mutex
	work    sync.WaitGroup
}

// serverID is a server's name in the driver.
func serverID(id int64) string { return "s" + strconv.FormatInt(id, 10) }

func (p portalService) driver() (ServerDriver, error) {
	if p.s.cfg.Servers == nil {
		return nil, ErrNoDriver
	}
	return p.s.cfg.Servers, nil
}

func (p portalService) detail(srv store.Server) *hacv1.ServerDetail {
	d := &hacv1.ServerDetail{Name: srv.Name, State: string(srv.State), StateReason: srv.StateReason, Zone: srv.Zone, Tier: srv.Tier,
		Type: srv.Type, Image: srv.Image, KeyPair: srv.KeyPairName, PrivateAddress: srv.PrivateIP, Model: srv.Model,
		ReferenceModel: srv.ReferenceModel, AcceleratorToken: srv.AcceleratorToken, CreatedAt: ts(srv.CreatedAt)}
	if t, err := catalog.LookupServerType(srv.Type); err == nil {
		d.Cpus, d.MemoryMib, d.RootDiskGb = int32(t.CPUs), t.MemoryMiB, catalog.RootDiskGB
	}
	if p.s.cfg.Servers != nil && srv.Kind == store.KindVM {
		d.PublicAddress = p.s.cfg.Servers.PublicAddress()
	}
	if j, ok := p.s.broker.serverJob(srv.ID); ok && j.State == store.JobRunning {
		d.Job = jobProto(j)
	}
	return d
}

// ownServer returns the caller's live server by name.
func (p portalService) ownServer(ctx context.Context, name string) (store.Server, error) {
	var srv store.Server
	err := p.s.store.View(ctx, func(tx *store.Tx) error {
		var err error
		srv, err = tx.ServerByName(principalFrom(ctx).user.ID, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return srv, fmt.Errorf("%w: %q", ErrUnknownServer, name)
	}
	return srv, err
}

func (p portalService) CreateServer(ctx context.Context, req *connect.Request[hacv1.CreateServerRequest]) (*connect.Response[hacv1.CreateServerResponse], error) {
	drv, err := p.driver()
	if err != nil {
		return nil, apiError(err)
	}
	m := req.Msg
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	srv := store.Server{UserID: principalFrom(ctx).user.ID, UserName: principalFrom(ctx).user.Name, Name: m.Name, Kind: store.KindVM,
		State: store.ServerCreating, Model: or(m.Model, p.s.cfg.DefaultModel), Zone: or(m.Zone, catalog.DefaultZone),
		Tier: or(m.Tier, catalog.DefaultTier), Type: or(m.Type, catalog.DefaultServerType), Image: or(m.Image, drv.DefaultImage()),
		AcceleratorToken: token.PublicID(), CreatedAt: p.s.cfg.Now(), ReferenceModel: m.ReferenceModel}
	if err := p.checkCreate(srv, m.KeyPair, drv); err != nil {
		return nil, apiError(err)
	}
	stype, _ := catalog.LookupServerType(srv.Type)
	tok := token.New(token.ServerPrefix)
	var key store.KeyPair
	err = p.s.store.Update(ctx, func(tx *store.Tx) error {
		if err := p.s.checkServerQuota(tx, principalFrom(ctx).user); err != nil {
			return err
		}
		var err error
		if key, err = tx.KeyPairByName(srv.UserID, m.KeyPair); err != nil {
			return fmt.Errorf("%w: no key pair named %q", ErrUnknownKeyPair, m.KeyPair)
		}
		srv.KeyPairID, srv.KeyPairName = key.ID, key.Name
		used, err := tx.UsedPrivateIPs()
		if err != nil {
			return err
		}
		if srv.PrivateIP, err = freeAddress(drv.Subnet(), drv.Gateway(), used); err != nil {
			return err
		}
		if srv.ID, err = tx.CreateServer(srv); err != nil {
			return fmt.Errorf("server %q: %w", srv.Name, err)
		}
		return tx.AddToken(token.Hash(tok), store.Token{Kind: store.ServerToken, UserID: srv.UserID, ServerID: srv.ID}, srv.CreatedAt)
	})
	if err != nil {
		return nil, apiError(err)
	}
	spec := p.spec(srv, key, tok, stype)
	p.s.portal.work.Add(1)
	go func() {
		defer p.s.portal.work.Done()
		p.provision(srv, spec)
	}()
	return connect.NewResponse(&hacv1.CreateServerResponse{Server: p.detail(srv)}), nil
}

// checkCreate returns the first reason a request cannot make srv.
func (p portalService) checkCreate(srv store.Server, keyPair string, drv ServerDriver) error {
	if err := validServerName(srv.Name); err != nil {
		return err
	}
	if _, err := p.s.cfg.Catalog.Lookup(srv.Model); err != nil {
		return err
	}
	images := slices.Sorted(maps.Keys(drv.Images()))
	_, typeErr := catalog.LookupServerType(srv.Type)
	_, refErr := examples.LookupReference(srv.ReferenceModel)
	if srv.ReferenceModel == "" {
		refErr = nil
	}
	if keyPair == "" {
		return fmt.Errorf("%w: a server needs a key pair: create one with hac keypair create NAME, then pass --keypair NAME", ErrInvalid)
	}
	for _, err := range []error{typeErr, catalog.OneOf("zone", srv.Zone, catalog.Zones), catalog.OneOf("tier", srv.Tier, catalog.Tiers),
		catalog.OneOf("image", srv.Image, images), refErr} {
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

// freeAddress returns the lowest address of subnet that is neither the
// network, the gateway, the broadcast nor used.
func freeAddress(subnet *net.IPNet, gateway string, used map[string]bool) (string, error) {
	prefix, _ := netip.ParsePrefix(subnet.String())
	last := prefix.Addr()
	for a := prefix.Addr(); prefix.Contains(a); a = a.Next() {
		last = a
	}
	for a := prefix.Addr().Next(); prefix.Contains(a) && a != last; a = a.Next() {
		if s := a.String(); s != gateway && !used[s] {
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: no free address left in %s", ErrInvalid, subnet)
}

// spec is what the driver needs to make srv.
func (p portalService) spec(srv store.Server, key store.KeyPair, tok string, t catalog.ServerType) vm.Spec {
	config := fmt.Sprintf("# hac client configuration of server %s\naddr = %s\nca_pin = %s\ntoken = %s\n", srv.Name, p.s.ServerURL(), p.s.Pin(), tok)
	spec := vm.Spec{ID: serverID(srv.ID), Hostname: srv.Name, CPUs: t.CPUs, MemoryMiB: t.MemoryMiB, DiskBytes: catalog.RootDiskGB * 1e9, Image: srv.Image,
		Address: srv.PrivateIP, AuthorizedKeys: []string{key.AuthorizedKey},
		Files: []vm.File{
			{Path: "/etc/hac/config", Mode: 0o640, UID: 0, GID: 1000, Data: []byte(config)},
			{Path: "/home/ubuntu/sample/train.py", Mode: 0o644, UID: 1000, GID: 1000, Data: examples.SampleTrainPy},
		}}
	// The chosen reference model's code, ready to train, in ~/NAME (S8).
	if ref, err := examples.LookupReference(srv.ReferenceModel); err == nil {
		for _, name := range slices.Sorted(maps.Keys(ref.Files)) {
			spec.Files = append(spec.Files, vm.File{Path: "/home/ubuntu/" + ref.Name + "/" + name, Mode: 0o644, UID: 1000, GID: 1000, Data: ref.Files[name]})
		}
	}
	return spec
}

// provision makes the server in the background and records the outcome.
func (p portalService) provision(srv store.Server, spec vm.Spec) {
	ctx := context.Background()
	state, reason := store.ServerRunning, ""
	// The rules first: the new server boots already inside its owner's
	// group, apart from other users' servers.
	if err := p.s.applyRules(ctx); err != nil {
		state, reason = store.ServerError, "network rules: "+err.Error()
		p.s.cfg.Logger.Error("apply rules", "server", srv.Name, "err", err)
	} else if err := p.s.cfg.Servers.Create(ctx, spec); err != nil {
		state, reason = store.ServerError, err.Error()
		p.s.cfg.Logger.Error("create server", "server", srv.Name, "err", err)
	}
	if err := p.s.store.Update(ctx, func(tx *store.Tx) error { return tx.SetServerState(srv.ID, state, reason, p.s.cfg.Now()) }); err != nil {
		p.s.cfg.Logger.Error("record server state", "server", srv.Name, "err", err)
	}
}

func (p portalService) GetServer(ctx context.Context, req *connect.Request[hacv1.GetServerRequest]) (*connect.Response[hacv1.GetServerResponse], error) {
	srv, err := p.ownServer(ctx, req.Msg.Name)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.GetServerResponse{Server: p.detail(srv)}), nil
}

func (p portalService) DeleteServer(ctx context.Context, req *connect.Request[hacv1.DeleteServerRequest]) (*connect.Response[hacv1.DeleteServerResponse], error) {
	srv, err := p.ownServer(ctx, req.Msg.Name)
	if err != nil {
		return nil, apiError(err)
	}
	if srv.Kind == store.KindVM && srv.State == store.ServerCreating {
		return nil, apiError(fmt.Errorf("%w: server %q is still being created: delete it once it is running or in error", ErrInvalid, srv.Name))
	}
	if j, ok := p.s.broker.serverJob(srv.ID); ok {
		p.s.broker.end(j.ID, store.JobCanceled, sql.NullInt64{}, "the server was deleted", "")
	}
	err = p.s.store.Update(ctx, func(tx *store.Tx) error {
		if err := tx.RevokeTokens(store.ServerToken, srv.UserID, srv.ID, p.s.cfg.Now()); err != nil {
			return err
		}
		if err := tx.DeleteServerNetwork(srv.ID); err != nil {
			return err
		}
		if srv.Kind == store.KindVM {
			return tx.SetServerState(srv.ID, store.ServerDeleting, "", p.s.cfg.Now())
		}
		return tx.MarkServerDeleted(srv.ID, p.s.cfg.Now())
	})
	if err != nil {
		return nil, apiError(err)
	}
	if srv.Kind == store.KindVM {
		p.s.portal.work.Add(1)
		go func() {
			defer p.s.portal.work.Done()
			p.teardown(srv)
		}()
	}
	return connect.NewResponse(&hacv1.DeleteServerResponse{}), nil
}

// teardown removes a deleting server's rules and the server itself.
func (p portalService) teardown(srv store.Server) {
	ctx := context.Background()
	if err := p.s.applyRules(ctx); err != nil {
		p.s.cfg.Logger.Error("apply rules", "err", err)
	}
	if err := p.s.cfg.Servers.Delete(ctx, serverID(srv.ID)); err != nil {
		p.s.cfg.Logger.Error("delete server", "server", srv.Name, "err", err)
		p.s.store.Update(ctx, func(tx *store.Tx) error {
			return tx.SetServerState(srv.ID, store.ServerError, "delete failed: "+err.Error(), p.s.cfg.Now())
		})
		return
	}
	if err := p.s.store.Update(ctx, func(tx *store.Tx) error { return tx.MarkServerDeleted(srv.ID, p.s.cfg.Now()) }); err != nil {
		p.s.cfg.Logger.Error("record deletion", "server", srv.Name, "err", err)
	}
}

func (p portalService) SetServerModel(ctx context.Context, req *connect.Request[hacv1.SetServerModelRequest]) (*connect.Response[hacv1.SetServerModelResponse], error) {
	srv, err := p.ownServer(ctx, req.Msg.Name)
	if err != nil {
		return nil, apiError(err)
	}
	if _, err := p.s.cfg.Catalog.Lookup(req.Msg.Model); err != nil {
		return nil, apiError(err)
	}
	if err := p.s.broker.switchModel(srv.ID, req.Msg.Model); err != nil {
		return nil, apiError(err)
	}
	srv.Model = req.Msg.Model
	return connect.NewResponse(&hacv1.SetServerModelResponse{Server: p.detail(srv)}), nil
}

func (p portalService) StopServer(ctx context.Context, req *connect.Request[hacv1.StopServerRequest]) (*connect.Response[hacv1.StopServerResponse], error) {
	srv, err := p.setRunning(ctx, req.Msg.Name, false)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.StopServerResponse{Server: p.detail(srv)}), nil
}

func (p portalService) StartServer(ctx context.Context, req *connect.Request[hacv1.StartServerRequest]) (*connect.Response[hacv1.StartServerResponse], error) {
	srv, err := p.setRunning(ctx, req.Msg.Name, true)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.StartServerResponse{Server: p.detail(srv)}), nil
}

// setRunning starts or stops a server hac runs. Stopping ends the program
// that holds its accelerator, as a power-off would.
func (p portalService) setRunning(ctx context.Context, name string, run bool) (store.Server, error) {
	drv, err := p.driver()
	if err != nil {
		return store.Server{}, err
	}
	srv, err := p.vmServer(ctx, name)
	if err != nil {
		return srv, err
	}
	want, from := store.ServerRunning, store.ServerStopped
	if !run {
		want, from = store.ServerStopped, store.ServerRunning
	}
	if srv.State == want {
		return srv, nil
	}
	if srv.State != from {
		return srv, fmt.Errorf("%w: server %q is %s", ErrInvalid, name, srv.State)
	}
	if run {
		err = drv.Start(ctx, serverID(srv.ID))
	} else {
		if j, ok := p.s.broker.serverJob(srv.ID); ok {
			p.s.broker.end(j.ID, store.JobCanceled, sql.NullInt64{}, "the server was stopped", "")
		}
		err = drv.Stop(ctx, serverID(srv.ID))
	}
	if err != nil {
		return srv, err
	}
	srv.State, srv.StateReason = want, ""
	return srv, p.s.store.Update(ctx, func(tx *store.Tx) error { return tx.SetServerState(srv.ID, want, "", p.s.cfg.Now()) })
}
