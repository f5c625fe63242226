package controlplane

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// TestCachedAccountsFollowCommits: a token the cache holds is refused on
// the first call after its revocation commits, and a server's model read
// through the cache is the one last switched to.
func TestCachedAccountsFollowCommits(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 1, 1)
	ctx := context.Background()
	acc := hacv1connect.NewAcceleratorServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(toks[0])))
	p, err := s.authenticate(ctx, bearer(toks[0]))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second from the cache
		if _, err := s.resolveServer(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.GetVersion(ctx, connect.NewRequest(&hacv1.GetVersionRequest{})); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.broker.switchModel(p.serverID, "large.64gb"); err != nil {
		t.Fatal(err)
	}
	if srv, err := s.resolveServer(ctx, p, ""); err != nil || srv.Model != "large.64gb" {
		t.Errorf("after a switch to large.64gb: %+v, %v", srv, err)
	}
	err = s.store.Update(ctx, func(tx *store.Tx) error { return tx.RevokeToken(token.Hash(toks[0]), s.cfg.Now()) })
	if err != nil {
		t.Fatal(err)
	}
	_, err = acc.GetVersion(ctx, connect.NewRequest(&hacv1.GetVersionRequest{}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("a revoked token's next call: %v", err)
	}
}

func bearer(tok string) map[string][]string {
	return map[string][]string{"Authorization": {"Bearer " + tok}}
}

// TestRefusalsSayWhoAndWhat: a refused call names who is asking and what
// that token is for.
func TestRefusalsSayWhoAndWhat(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 1, 1)
	ctx := context.Background()
	httpc := apiclient.New(s.Pin())
	pool := hacv1connect.NewPoolServiceClient(httpc, url, connect.WithInterceptors(apiclient.Bearer(toks[0])))
	_, err := pool.ListNodes(ctx, connect.NewRequest(&hacv1.ListNodesRequest{}))
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "server token of user admin") ||
		!strings.Contains(err.Error(), "ListNodes") || !strings.Contains(err.Error(), "user token") {
		t.Errorf("a server token's ListNodes: %v", err)
	}
	acc := hacv1connect.NewAcceleratorServiceClient(httpc, url, connect.WithInterceptors(apiclient.Bearer(toks[0])))
	_, err = acc.GetAccelerator(ctx, connect.NewRequest(&hacv1.GetAcceleratorRequest{Server: "dev"}))
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "server s0's token") || !strings.Contains(err.Error(), "drop --server") {
		t.Errorf("a server token naming another server: %v", err)
	}
}

// TestSuspendedLeaseIsTheOwnersOnly: another server's token cannot ask for
// the suspended lease (Ctrl+Z) of a job, which would keep its GPUs held;
// the owner's gets it, never shorter than the lease.
func TestSuspendedLeaseIsTheOwnersOnly(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 1, 2)
	ctx := context.Background()
	client := func(tok string) hacv1connect.AcceleratorServiceClient {
		return hacv1connect.NewAcceleratorServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(tok)))
	}
	owner, other := client(toks[0]), client(toks[1])
	stream, err := owner.Allocate(ctx, connect.NewRequest(&hacv1.AllocateRequest{Command: []string{"x"}}))
	if err != nil {
		t.Fatal(err)
	}
	var grant *hacv1.Grant
	for stream.Receive() && grant == nil {
		grant = stream.Msg().GetGrant()
	}
	stream.Close()
	if grant == nil {
		t.Fatalf("no grant: %v", stream.Err())
	}
	_, err = other.RenewLease(ctx, connect.NewRequest(&hacv1.RenewLeaseRequest{JobId: grant.JobId, Suspended: true}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("another server's suspended renewal: %v", err)
	}
	resp, err := owner.RenewLease(ctx, connect.NewRequest(&hacv1.RenewLeaseRequest{JobId: grant.JobId, Suspended: true}))
	if err != nil || resp.Msg.LeaseTtlSeconds != int32(s.cfg.SuspendedLease.Seconds()) {
		t.Errorf("the owner's suspended renewal: %v, %v", resp, err)
	}
}
