package controlplane

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/keypair"
	"github.com/hac-project/hac/internal/store"
)

// keyPairService implements hacv1connect.KeyPairServiceHandler.
type keyPairService struct{ s *Server }

var keyPairName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// validKeyPairName checks a key pair name, which also names the user's
// NAME.pem file.
func validKeyPairName(name string) error {
	if !keyPairName.MatchString(name) {
		return fmt.Errorf("%w: key pair name %q: use 1-63 letters, digits, '.', '_' and '-', starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

func keyPairProto(k store.KeyPair) *hacv1.KeyPair {
	return &hacv1.KeyPair{Name: k.Name, Type: k.Type, Fingerprint: k.Fingerprint, PublicKey: k.AuthorizedKey, CreatedAt: ts(k.CreatedAt)}
}

// storeKeyPair records a key pair's public half for the caller.
func (ks keyPairService) storeKeyPair(ctx context.Context, name string, pub keypair.Public) (store.KeyPair, error) {
	k := store.KeyPair{UserID: principalFrom(ctx).user.ID, Name: name, Type: pub.Type, AuthorizedKey: pub.AuthorizedKey,
		Fingerprint: pub.Fingerprint, CreatedAt: ks.s.cfg.Now()}
	err := ks.s.store.Update(ctx, func(tx *store.Tx) error {
		var err error
		k.ID, err = tx.CreateKeyPair(k)
		return err
	})
	return k, err
}

func (ks keyPairService) CreateKeyPair(ctx context.Context, req *connect.Request[hacv1.CreateKeyPairRequest]) (*connect.Response[hacv1.CreateKeyPairResponse], error) {
	if err := validKeyPairName(req.Msg.Name); err != nil {
		return nil, apiError(err)
	}
	g, err := keypair.Generate(req.Msg.Type, req.Msg.Name)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	k, err := ks.storeKeyPair(ctx, req.Msg.Name, g.Public)
	if err != nil {
		return nil, apiError(err)
	}
	out := &hacv1.CreateKeyPairResponse{KeyPair: keyPairProto(k), PrivateKeyPem: g.PrivatePEM}
	if req.Msg.Ppk {
		out.PrivateKeyPpk = g.PPK
	}
	return connect.NewResponse(out), nil
}

func (ks keyPairService) ImportKeyPair(ctx context.Context, req *connect.Request[hacv1.ImportKeyPairRequest]) (*connect.Response[hacv1.ImportKeyPairResponse], error) {
	if err := validKeyPairName(req.Msg.Name); err != nil {
		return nil, apiError(err)
	}
	pub, err := keypair.ParsePublic(req.Msg.PublicKey)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	k, err := ks.storeKeyPair(ctx, req.Msg.Name, pub)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.ImportKeyPairResponse{KeyPair: keyPairProto(k)}), nil
}

func (ks keyPairService) ListKeyPairs(ctx context.Context, _ *connect.Request[hacv1.ListKeyPairsRequest]) (*connect.Response[hacv1.ListKeyPairsResponse], error) {
	out := &hacv1.ListKeyPairsResponse{}
	err := ks.s.store.View(ctx, func(tx *store.Tx) error {
		keys, err := tx.KeyPairs(principalFrom(ctx).user.ID)
		for _, k := range keys {
			out.KeyPairs = append(out.KeyPairs, keyPairProto(k))
		}
		return err
	})
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(out), nil
}

func (ks keyPairService) DeleteKeyPair(ctx context.Context, req *connect.Request[hacv1.DeleteKeyPairRequest]) (*connect.Response[hacv1.DeleteKeyPairResponse], error) {
	err := ks.s.store.Update(ctx, func(tx *store.Tx) error {
		k, err := tx.KeyPairByName(principalFrom(ctx).user.ID, req.Msg.Name)
		if err != nil {
			return err
		}
		users, err := tx.ServersUsingKeyPair(k.ID)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("key pair %q is used by server %s: %w", k.Name, strings.Join(users, ", "), ErrKeyPairInUse)
		}
		return tx.DeleteKeyPair(k.UserID, k.Name)
	})
	if errors.Is(err, store.ErrNotFound) {
		err = fmt.Errorf("%w: no key pair named %q", ErrUnknownKeyPair, req.Msg.Name)
	}
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.DeleteKeyPairResponse{}), nil
}
