package controlplane

import (
	"errors"

	"connectrpc.com/connect"

	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/sched"
	"github.com/hac-project/hac/internal/store"
)

// Errors the API returns. Their texts are shown to users as they are.
var (
	ErrUnauthenticated = errors.New("the token is missing, wrong or revoked: check HAC_TOKEN or your config file")
	ErrPermission      = errors.New("this token may not do that")
	ErrNoServer        = errors.New("no server named: pass --server NAME, set HAC_SERVER, or use a server token")
	ErrUnknownServer   = errors.New("no such server")
	ErrUnknownJob      = errors.New("no such job")
	ErrInUse           = errors.New("The model cannot be switched while the HAC AI Accelerator is in use.")
	ErrInvalid         = errors.New("invalid request")
	ErrNodeProtocol    = errors.New("agent protocol version not supported: upgrade hac on this node")
	ErrUnknownNode     = errors.New("unknown node: register first")
	ErrUnknownKeyPair  = errors.New("no such key pair")
	ErrKeyPairInUse    = errors.New("delete the servers that use it first")
	ErrTooLarge        = errors.New("this accelerator model does not fit the pool")
	ErrCanceled        = errors.New("the request was canceled")
	ErrQuota           = errors.New("quota reached")
)

// codeOf maps errors to API codes: the one table at the boundary.
func codeOf(err error) connect.Code {
	table := []struct {
		err  error
		code connect.Code
	}{
		{ErrUnauthenticated, connect.CodeUnauthenticated},
		{ErrPermission, connect.CodePermissionDenied},
		{ErrNoServer, connect.CodeInvalidArgument},
		{ErrUnknownServer, connect.CodeNotFound},
		{ErrUnknownJob, connect.CodeNotFound},
		{ErrUnknownNode, connect.CodeNotFound},
		{ErrUnknownKeyPair, connect.CodeNotFound},
		{ErrKeyPairInUse, connect.CodeFailedPrecondition},
		{ErrNoDriver, connect.CodeFailedPrecondition},
		{ErrInUse, connect.CodeFailedPrecondition},
		{ErrInvalid, connect.CodeInvalidArgument},
		{ErrNodeProtocol, connect.CodeFailedPrecondition},
		{catalog.ErrUnknownModel, connect.CodeInvalidArgument},
		{sched.ErrNeverFits, connect.CodeResourceExhausted},
		{ErrTooLarge, connect.CodeResourceExhausted},
		{ErrCanceled, connect.CodeCanceled},
		{ErrQuota, connect.CodeResourceExhausted},
		{sched.ErrBadRequest, connect.CodeInvalidArgument},
		{store.ErrExists, connect.CodeAlreadyExists},
		{store.ErrNotFound, connect.CodeNotFound},
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return connect.CodeInternal
}

// apiError wraps err for the wire with its code.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(codeOf(err), err)
}
