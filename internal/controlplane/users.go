package controlplane

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// userService implements hacv1connect.UserServiceHandler.
type userService struct{ s *Server }

func (us userService) CreateUser(ctx context.Context, req *connect.Request[hacv1.CreateUserRequest]) (*connect.Response[hacv1.CreateUserResponse], error) {
	if !principalFrom(ctx).user.Admin {
		return nil, apiError(fmt.Errorf("%w: only an admin may create users", ErrPermission))
	}
	if err := validServerName(req.Msg.Name); err != nil {
		return nil, apiError(fmt.Errorf("user name: %w", err))
	}
	tok := token.New(token.UserPrefix)
	now := us.s.cfg.Now()
	err := us.s.store.Update(ctx, func(tx *store.Tx) error {
		id, err := tx.CreateUser(req.Msg.Name, req.Msg.Admin, now)
		if err != nil {
			return err
		}
		return tx.AddToken(token.Hash(tok), store.Token{Kind: store.UserToken, UserID: id}, now)
	})
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.CreateUserResponse{Name: req.Msg.Name, Token: tok}), nil
}
