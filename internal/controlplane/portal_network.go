package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/vm"
)

func validProtocol(p string) (string, error) {
	switch p {
	case "", "tcp":
		return "tcp", nil
	case "udp":
		return "udp", nil
	}
	return "", fmt.Errorf("%w: protocol %q: use tcp or udp", ErrInvalid, p)
}

func validPort(what string, port int32) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%w: %s %d is outside 1-65535", ErrInvalid, what, port)
	}
	return nil
}

// vmServer returns the caller's server if it is one hac runs.
func (p portalService) vmServer(ctx context.Context, name string) (store.Server, error) {
	srv, err := p.ownServer(ctx, name)
	if err != nil {
		return srv, err
	}
	if srv.Kind != store.KindVM {
		return srv, fmt.Errorf("%w: server %q is a registered machine: hac does not run its network", ErrInvalid, name)
	}
	if srv.State == store.ServerDeleting {
		return srv, fmt.Errorf("%w: server %q is being deleted", ErrInvalid, name)
	}
	return srv, nil
}

func forwardProto(f store.PortForward, public string) *hacv1.PortForward {
	return &hacv1.PortForward{Id: strconv.FormatInt(f.ID, 10), Server: f.ServerName, Protocol: f.Protocol, PublicAddress: public,
		PublicPort: int32(f.PublicPort), PrivatePort: int32(f.PrivatePort)}
}

func (p portalService) AddPortForward(ctx context.Context, req *connect.Request[hacv1.AddPortForwardRequest]) (*connect.Response[hacv1.AddPortForwardResponse], error) {
	drv, err := p.driver()
	if err != nil {
		return nil, apiError(err)
	}
	m := req.Msg
	proto, err := validProtocol(m.Protocol)
	if err != nil {
		return nil, apiError(err)
	}
	if err := validPort("private port", m.PrivatePort); err != nil {
		return nil, apiError(err)
	}
	lo, hi := p.s.cfg.PublicPorts[0], p.s.cfg.PublicPorts[1]
	if m.PublicPort != 0 && (int(m.PublicPort) < lo || int(m.PublicPort) > hi) {
		return nil, apiError(fmt.Errorf("%w: public port %d is outside the allowed range %d-%d", ErrInvalid, m.PublicPort, lo, hi))
	}
	srv, err := p.vmServer(ctx, m.Server)
	if err != nil {
		return nil, apiError(err)
	}
	f := store.PortForward{ServerID: srv.ID, ServerName: srv.Name, Protocol: proto, PublicPort: int(m.PublicPort),
		PrivatePort: int(m.PrivatePort), CreatedAt: p.s.cfg.Now()}
	// A forward would take the port's traffic from a host service.
	if f.PublicPort != 0 && drv.PublicPortInUse(proto, f.PublicPort) {
		return nil, apiError(fmt.Errorf("%w: public port %d/%s is in use by a service on the host: choose another, or leave --public-port out to get a free one", ErrInvalid, f.PublicPort, proto))
	}
	err = p.s.store.Update(ctx, func(tx *store.Tx) error {
		if max := p.s.cfg.Quotas.PortForwards; max > 0 {
			mine, err := tx.PortForwards(srv.UserID, 0)
			if err != nil {
				return err
			}
			if len(mine) >= max {
				return fmt.Errorf("%w: %s has %d port forwards, the most one user may; delete one first, or ask the operator to raise --max-port-forwards", ErrQuota, srv.UserName, len(mine))
			}
		}
		if f.PublicPort == 0 {
			all, err := tx.PortForwards(0, 0)
			if err != nil {
				return err
			}
			taken := map[int]bool{}
			for _, o := range all {
				if o.Protocol == proto {
					taken[o.PublicPort] = true
				}
			}
			for port := lo; port <= hi && f.PublicPort == 0; port++ {
				if !taken[port] && !drv.PublicPortInUse(proto, port) {
					f.PublicPort = port
				}
			}
			if f.PublicPort == 0 {
				return fmt.Errorf("%w: every public port in %d-%d is taken", ErrInvalid, lo, hi)
			}
		}
		var err error
		f.ID, err = tx.AddPortForward(f)
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("%w: public port %d/%s is already forwarded: choose another --public-port, or leave it out to get a free one", store.ErrExists, f.PublicPort, proto)
		}
		return err
	})
	if err != nil {
		return nil, apiError(err)
	}
	if err := p.s.applyRules(ctx); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.AddPortForwardResponse{PortForward: forwardProto(f, drv.PublicAddress())}), nil
}

// serverFilter resolves an optional server name to its id (0: all).
func (p portalService) serverFilter(ctx context.Context, name string) (int64, error) {
	if name == "" {
		return 0, nil
	}
	srv, err := p.ownServer(ctx, name)
	return srv.ID, err
}

func (p portalService) ListPortForwards(ctx context.Context, req *connect.Request[hacv1.ListPortForwardsRequest]) (*connect.Response[hacv1.ListPortForwardsResponse], error) {
	sid, err := p.serverFilter(ctx, req.Msg.Server)
	if err != nil {
		return nil, apiError(err)
	}
	public := ""
	if p.s.cfg.Servers != nil {
		public = p.s.cfg.Servers.PublicAddress()
	}
	out := &hacv1.ListPortForwardsResponse{}
	err = p.s.store.View(ctx, func(tx *store.Tx) error {
		fs, err := tx.PortForwards(principalFrom(ctx).user.ID, sid)
		for _, f := range fs {
			out.PortForwards = append(out.PortForwards, forwardProto(f, public))
		}
		return err
	})
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(out), nil
}

func parseRowID(raw string) (int64, error) {
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: id %q is not a positive number (see the ID column of the list)", ErrInvalid, raw)
	}
	return id, nil
}

func (p portalService) DeletePortForward(ctx context.Context, req *connect.Request[hacv1.DeletePortForwardRequest]) (*connect.Response[hacv1.DeletePortForwardResponse], error) {
	if err := p.deleteRow(ctx, req.Msg.Id, "port forward", (*store.Tx).DeletePortForward); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.DeletePortForwardResponse{}), nil
}

func (p portalService) deleteRow(ctx context.Context, raw, what string, del func(*store.Tx, int64, int64) error) error {
	id, err := parseRowID(raw)
	if err != nil {
		return err
	}
	err = p.s.store.Update(ctx, func(tx *store.Tx) error { return del(tx, principalFrom(ctx).user.ID, id) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: no %s with id %d", store.ErrNotFound, what, id)
	}
	if err != nil {
		return err
	}
	return p.s.applyRules(ctx)
}

func ruleProto(r store.FirewallRule) *hacv1.FirewallRule {
	return &hacv1.FirewallRule{Id: strconv.FormatInt(r.ID, 10), Server: r.ServerName, Protocol: r.Protocol, Port: int32(r.Port), Source: r.Source}
}

func (p portalService) AddFirewallRule(ctx context.Context, req *connect.Request[hacv1.AddFirewallRuleRequest]) (*connect.Response[hacv1.AddFirewallRuleResponse], error) {
	if _, err := p.driver(); err != nil {
		return nil, apiError(err)
	}
	m := req.Msg
	proto, err := validProtocol(m.Protocol)
	if err != nil {
		return nil, apiError(err)
	}
	if err := validPort("port", m.Port); err != nil {
		return nil, apiError(err)
	}
	source := m.Source
	if source == "" {
		source = "0.0.0.0/0"
	}
	prefix, err := netip.ParsePrefix(source)
	if err != nil || !prefix.Addr().Is4() {
		return nil, apiError(fmt.Errorf("%w: source %q is not an IPv4 CIDR such as 203.0.113.0/24 or 0.0.0.0/0", ErrInvalid, source))
	}
	if prefix.Masked() != prefix {
		return nil, apiError(fmt.Errorf("%w: source %q has host bits set: did you mean %s?", ErrInvalid, source, prefix.Masked()))
	}
	srv, err := p.vmServer(ctx, m.Server)
	if err != nil {
		return nil, apiError(err)
	}
	r := store.FirewallRule{ServerID: srv.ID, ServerName: srv.Name, Protocol: proto, Port: int(m.Port), Source: prefix.String(), CreatedAt: p.s.cfg.Now()}
	err = p.s.store.Update(ctx, func(tx *store.Tx) error {
		var err error
		r.ID, err = tx.AddFirewallRule(r)
		return err
	})
	if err != nil {
		return nil, apiError(err)
	}
	if err := p.s.applyRules(ctx); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.AddFirewallRuleResponse{Rule: ruleProto(r)}), nil
}

func (p portalService) ListFirewallRules(ctx context.Context, req *connect.Request[hacv1.ListFirewallRulesRequest]) (*connect.Response[hacv1.ListFirewallRulesResponse], error) {
	sid, err := p.serverFilter(ctx, req.Msg.Server)
	if err != nil {
		return nil, apiError(err)
	}
	out := &hacv1.ListFirewallRulesResponse{}
	err = p.s.store.View(ctx, func(tx *store.Tx) error {
		rs, err := tx.FirewallRules(principalFrom(ctx).user.ID, sid)
		for _, r := range rs {
			out.Rules = append(out.Rules, ruleProto(r))
		}
		return err
	})
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(out), nil
}

func (p portalService) DeleteFirewallRule(ctx context.Context, req *connect.Request[hacv1.DeleteFirewallRuleRequest]) (*connect.Response[hacv1.DeleteFirewallRuleResponse], error) {
	if err := p.deleteRow(ctx, req.Msg.Id, "firewall rule", (*store.Tx).DeleteFirewallRule); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.DeleteFirewallRuleResponse{}), nil
}

// applyRules hands the driver every forward with the firewall rules that
// open it (a rule opens the forwards of its server with its protocol and
// public port).
func (s *Server) applyRules(ctx context.Context) error {
	if s.cfg.Servers == nil {
		return nil
	}
	s.portal.rulesMu.Lock()
	defer s.portal.rulesMu.Unlock()
	var forwards []vm.Forward
	var tenants [][]vm.Member
	err := s.store.View(ctx, func(tx *store.Tx) error {
		srvs, err := tx.Servers(0)
		if err != nil {
			return err
		}
		byUser := map[int64][]vm.Member{}
		for _, srv := range srvs {
			if srv.PrivateIP != "" && srv.Kind == store.KindVM {
				byUser[srv.UserID] = append(byUser[srv.UserID], vm.Member{ID: serverID(srv.ID), Address: srv.PrivateIP})
			}
		}
		for _, ms := range byUser {
			tenants = append(tenants, ms)
		}
		fs, err := tx.PortForwards(0, 0)
		if err != nil {
			return err
		}
		rs, err := tx.FirewallRules(0, 0)
		if err != nil {
			return err
		}
		for _, f := range fs {
			if f.PrivateIP == "" {
				continue
			}
			vf := vm.Forward{Protocol: f.Protocol, PublicPort: f.PublicPort, Address: f.PrivateIP, PrivatePort: f.PrivatePort}
			for _, r := range rs {
				if r.ServerID == f.ServerID && r.Protocol == f.Protocol && r.Port == f.PublicPort {
					vf.Allow = append(vf.Allow, r.Source)
				}
			}
			forwards = append(forwards, vf)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.cfg.Servers.ApplyRules(ctx, vm.Rules{Forwards: forwards, HostPorts: s.hostPorts(), Tenants: tenants})
}

// hostPorts are the ports of hac on the servers' gateway: the API's
// listener there, and every node agent that listens there.
func (s *Server) hostPorts() []int {
	var ports []int
	if s.serverLn != nil {
		ports = append(ports, s.serverLn.Addr().(*net.TCPAddr).Port)
	}
	nodes, _, _ := s.broker.nodesView()
	for _, n := range nodes {
		host, port, err := net.SplitHostPort(n.Address)
		if p, perr := strconv.Atoi(port); err == nil && perr == nil && host == s.cfg.Servers.Gateway() {
			ports = append(ports, p)
		}
	}
	return ports
}

// reconcileServers makes the driver match the store after a start: servers
// that should run are started (made anew if their disk is gone), servers
// being deleted are finished, servers the store does not know are removed,
// and the rules are applied again.
func (s *Server) reconcileServers(ctx context.Context) error {
	drv := s.cfg.Servers
	if drv == nil {
		return nil
	}
	var srvs []store.Server
	if err := s.store.View(ctx, func(tx *store.Tx) error {
		var err error
		srvs, err = tx.Servers(0)
		return err
	}); err != nil {
		return err
	}
	known := map[string]bool{}
	p := portalService{s}
	for _, srv := range srvs {
		if srv.Kind != store.KindVM {
			continue
		}
		id := serverID(srv.ID)
		known[id] = true
		switch srv.State {
		case store.ServerDeleting:
			p.teardown(srv)
		case store.ServerRunning, store.ServerCreating:
			st, err := drv.Status(ctx, id)
			if err == nil && st == vm.Stopped {
				err = drv.Start(ctx, id)
			} else if err == nil && st == vm.Missing {
				err = fmt.Errorf("its disk is gone: delete it and create it again")
			}
			state, reason := store.ServerRunning, ""
			if err != nil {
				state, reason = store.ServerError, err.Error()
			}
			s.store.Update(ctx, func(tx *store.Tx) error { return tx.SetServerState(srv.ID, state, reason, s.cfg.Now()) })
		}
	}
	ids, err := drv.List(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !known[id] {
			s.cfg.Logger.Warn("removing a server the store does not know", "id", id)
			drv.Delete(ctx, id)
		}
	}
	return s.applyRules(ctx)
}
