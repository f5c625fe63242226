package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
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
	// also admits more kinds to some procedures (by their full name).
	also map[string][]store.TokenKind
}

func (a authInterceptor) check(ctx context.Context, procedure string) error {
	p, ok := ctx.Value(principalKey{}).(principal)
	if !ok {
		return apiError(ErrUnauthenticated)
	}
	if !slices.Contains(a.kinds, p.kind) && !slices.Contains(a.also[procedure], p.kind) {
		return apiError(fmt.Errorf("%w: %s may not call %s; %s", ErrPermission, p.describe(), path.Base(procedure), mayDo(p.kind)))
	}
	return nil
}

// describe names who a principal is, for refusals.
func (p principal) describe() string {
	switch p.kind {
	case store.UserToken:
		if p.user.Admin {
			return fmt.Sprintf("the token of %s (an admin)", p.user.Name)
		}
		return fmt.Sprintf("the token of user %s", p.user.Name)
	case store.ServerToken:
		return fmt.Sprintf("a server token of user %s (server #%d)", p.user.Name, p.serverID)
	case store.NodeToken:
		return fmt.Sprintf("the token of node %s", p.node)
	case store.JoinToken:
		return fmt.Sprintf("a join token for node %s", p.node)
	}
	return "this token"
}

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.check(ctx, req.Spec().Procedure); err != nil {
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
		if err := a.check(ctx, conn.Spec().Procedure); err != nil {
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
				return store.Server{}, otherServer(srv, name)
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
				return otherServer(srv, name)
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

// otherServer is the refusal of a server token that names another server.
func otherServer(srv store.Server, name string) error {
	return fmt.Errorf("%w: this is server %s's token (user %s), which acts on %s only, not on %q: drop --server and HAC_SERVER, or use your user token to name another server",
		ErrPermission, srv.Name, srv.UserName, srv.Name, name)
}

// mayDo says what a kind of token is for, for refusals.
func mayDo(kind store.TokenKind) string {
	switch kind {
	case store.ServerToken:
		return "a server token runs programs on its own server's accelerator (hac run, hac smi, hac switch-model) and sees its server's jobs (hac jobs, hac queue, hac logs, hac cancel); for anything else use your user token (HAC_TOKEN or the config file that hac serve or your admin gave you)"
	case store.UserToken:
		return "a user token acts for its user through the API; a node's agent uses the node's own token"
	case store.NodeToken, store.JoinToken:
		return "node tokens are for hac agent only"
	}
	return "ask your admin for a token that may"
}
