package controlplane

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// principal is who a request acts for.
type principal struct {
	kind     store.TokenKind
	user     store.User
	serverID int64  // server tokens
	node     string // node and join tokens
	hash     string // the token's hash
}

type principalKey struct{}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// authenticate resolves the bearer token of a request.
func (s *Server) authenticate(ctx context.Context, h http.Header) (principal, error) {
	raw, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		return principal{}, ErrUnauthenticated
	}
	p := principal{hash: token.Hash(raw)}
	gen := s.store.AccountsGeneration()
	t, ok := s.tokens.get(gen, p.hash)
	if !ok {
		err := s.store.View(ctx, func(tx *store.Tx) error {
			var err error
			if t.tok, err = tx.TokenByHash(p.hash); err != nil {
				return err
			}
			if t.tok.Kind == store.NodeToken || t.tok.Kind == store.JoinToken {
				return nil
			}
			t.user, err = tx.UserByID(t.tok.UserID)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			return principal{}, ErrUnauthenticated
		}
		if err != nil {
			return principal{}, err
		}
		s.tokens.put(gen, p.hash, t)
	}
	if !t.tok.Expires.IsZero() && !s.cfg.Now().Before(t.tok.Expires) {
		return principal{}, ErrUnauthenticated
	}
	p.kind, p.serverID, p.node, p.user = t.tok.Kind, t.tok.ServerID, t.tok.Node, t.user
	return p, nil
}

// authenticateFirst resolves an API call's token before anything reads its
// body, so that an unauthenticated peer costs one lookup and no decoding;
// the principal travels in the request's context to authInterceptor.
func (s *Server) authenticateFirst(next http.Handler) http.Handler {
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r.Context(), r.Header)
		if err != nil {
			errs.Write(w, r, apiError(err))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// authInterceptor admits requests whose token, resolved by
// authenticateFirst, is of one of the kinds.
type authInterceptor struct {
	kinds []store.TokenKind
}

func (a authInterceptor) check(ctx context.Context) error {
	p, ok := ctx.Value(principalKey{}).(principal)
	if !ok {
		return apiError(ErrUnauthenticated)
	}
	if !slices.Contains(a.kinds, p.kind) {
		return apiError(ErrPermission)
	}
	return nil
}

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.check(ctx); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := a.check(ctx); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// resolveServer returns the server a request acts on: the server token's
// own, or the named server of the user (admins may name any user's server as
// USER/NAME).
func (s *Server) resolveServer(ctx context.Context, p principal, name string) (store.Server, error) {
	var srv store.Server
	gen := s.store.AccountsGeneration()
	key := strconv.FormatInt(p.serverID, 10)
	if p.kind == store.ServerToken {
		// A server token's every call reads its server: kept while the
		// accounts stand still.
		var ok bool
		if srv, ok = s.servers.get(gen, key); ok {
			if name != "" && name != srv.Name {
				return store.Server{}, ErrPermission
			}
			return srv, nil
		}
	}
	err := s.store.View(ctx, func(tx *store.Tx) error {
		var err error
		switch {
		case p.kind == store.ServerToken:
			srv, err = tx.ServerByID(p.serverID)
			if err == nil {
				s.servers.put(gen, key, srv)
			}
			if err == nil && name != "" && name != srv.Name {
				return ErrPermission
			}
		case name == "":
			return ErrNoServer
		default:
			userID := p.user.ID
			if owner, sname, ok := strings.Cut(name, "/"); ok && p.user.Admin {
				u, err := tx.UserByName(owner)
				if err != nil {
					return ErrUnknownServer
				}
				userID, name = u.ID, sname
			}
			srv, err = tx.ServerByName(userID, name)
		}
		if errors.Is(err, store.ErrNotFound) {
			return ErrUnknownServer
		}
		return err
	})
	return srv, err
}
