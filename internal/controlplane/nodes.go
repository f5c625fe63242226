package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// Node enrollment (SPEC P8): an admin's hac node add NAME makes a one-time
// join token bound to NAME; the agent trades it (Join) for a credential of
// its own, with which it can act as NAME only.

// defaultJoinTTL is how long a join token is good for.
const defaultJoinTTL = time.Hour

func requireAdmin(ctx context.Context, what string) error {
	if p := principalFrom(ctx); p.kind != store.UserToken || !p.user.Admin {
		return fmt.Errorf("%w: only an admin may %s", ErrPermission, what)
	}
	return nil
}

func (ps poolService) AddNode(ctx context.Context, req *connect.Request[hacv1.AddNodeRequest]) (*connect.Response[hacv1.AddNodeResponse], error) {
	if err := requireAdmin(ctx, "enroll nodes"); err != nil {
		return nil, apiError(err)
	}
	name := req.Msg.Name
	if err := validServerName(name); err != nil {
		return nil, apiError(fmt.Errorf("node name: %w", err))
	}
	ttl := time.Duration(req.Msg.TtlSeconds) * time.Second
	switch {
	case ttl == 0:
		ttl = defaultJoinTTL
	case ttl < time.Minute || ttl > 7*24*time.Hour:
		return nil, apiError(fmt.Errorf("%w: a join token lasts between 1m and 168h, not %v", ErrInvalid, ttl))
	}
	now := ps.s.cfg.Now()
	// The token carries the CA's pin: the agent trusts the control plane
	// it joins from the start.
	join := token.WithPin(token.New(token.JoinPrefix), ps.s.Pin())
	expires := now.Add(ttl)
	err := ps.s.store.Update(ctx, func(tx *store.Tx) error {
		enrolled, err := tx.NodeEnrolled(name)
		if err != nil {
			return err
		}
		if enrolled {
			return fmt.Errorf("%w: node %s is enrolled already; hac node remove %s first to enroll a new machine under that name", ErrInvalid, name, name)
		}
		// An earlier, unused join token for the name is worthless now.
		if err := tx.RevokeNodeTokens(name, store.JoinToken, now); err != nil {
			return err
		}
		return tx.AddToken(token.Hash(join), store.Token{Kind: store.JoinToken, Node: name, Expires: expires}, now)
	})
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.AddNodeResponse{JoinToken: join, Expires: ts(expires)}), nil
}

func (ps poolService) RemoveNode(ctx context.Context, req *connect.Request[hacv1.RemoveNodeRequest]) (*connect.Response[hacv1.RemoveNodeResponse], error) {
	if err := requireAdmin(ctx, "remove nodes"); err != nil {
		return nil, apiError(err)
	}
	if err := ps.s.broker.removeNode(req.Msg.Name); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.RemoveNodeResponse{}), nil
}

func (ps poolService) DrainNode(ctx context.Context, req *connect.Request[hacv1.DrainNodeRequest]) (*connect.Response[hacv1.DrainNodeResponse], error) {
	if err := requireAdmin(ctx, "drain nodes"); err != nil {
		return nil, apiError(err)
	}
	if err := ps.s.broker.drainNode(req.Msg.Name, !req.Msg.Resume); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.DrainNodeResponse{}), nil
}

func (a agentService) Join(ctx context.Context, req *connect.Request[hacv1.JoinRequest]) (*connect.Response[hacv1.JoinResponse], error) {
	p := principalFrom(ctx)
	if p.kind != store.JoinToken {
		return nil, apiError(fmt.Errorf("%w: Join takes the join token of hac node add", ErrPermission))
	}
	if req.Msg.ProtocolVersion != hacv1.AgentProtocolVersion {
		return nil, apiError(fmt.Errorf("%w: the agent speaks %d, this control plane %d", ErrNodeProtocol, req.Msg.ProtocolVersion, hacv1.AgentProtocolVersion))
	}
	cred, err := a.s.EnrollNode(ctx, p.node, p.hash)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.JoinResponse{NodeName: p.node, Token: cred}), nil
}

// EnrollNode makes a node's credential, using up the join token with hash
// joinHash (none for the embedded agent of hac serve --dev), and revoking
// any earlier credential of the node.
func (s *Server) EnrollNode(ctx context.Context, name, joinHash string) (string, error) {
	cred := token.New(token.NodePrefix)
	now := s.cfg.Now()
	err := s.store.Update(ctx, func(tx *store.Tx) error {
		if joinHash != "" {
			if err := tx.RevokeToken(joinHash, now); errors.Is(err, store.ErrNotFound) {
				return ErrUnauthenticated // used by a racing Join
			} else if err != nil {
				return err
			}
		}
		if err := tx.RevokeNodeTokens(name, store.NodeToken, now); err != nil {
			return err
		}
		return tx.AddToken(token.Hash(cred), store.Token{Kind: store.NodeToken, Node: name}, now)
	})
	if err != nil {
		return "", err
	}
	s.cfg.Logger.Info("node enrolled", "node", name)
	return cred, nil
}

// asNode checks that a node call comes from the node it names.
func asNode(ctx context.Context, name string) error {
	p := principalFrom(ctx)
	if p.kind != store.NodeToken {
		return fmt.Errorf("%w: join first (hac agent --join)", ErrPermission)
	}
	if p.node != name {
		return fmt.Errorf("%w: this credential is node %s's, not %s's", ErrPermission, p.node, name)
	}
	return nil
}
