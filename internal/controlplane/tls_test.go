package controlplane

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/pki"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// TestWorkerCertificates: a node gets a worker certificate for its own
// name at registration and again by heartbeat (for the same key only),
// from the CA that grants name, and grants name its key; a registration
// without a request is refused; join tokens carry the API's pin.
func TestWorkerCertificates(t *testing.T) {
	url, _, s := testPlane(t, store.Normal, 1, 0)
	ctx := t.Context()
	cred, err := s.EnrollNode(ctx, "gpu7", "")
	if err != nil {
		t.Fatal(err)
	}
	agent := hacv1connect.NewAgentServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(cred)))
	reg := &hacv1.RegisterNodeRequest{ProtocolVersion: hacv1.AgentProtocolVersion, Name: "gpu7", Address: "127.0.0.1:1",
		Gpus: []*hacv1.GPU{{Uuid: "GPU-7", MemoryMib: 1024}}}
	if _, err := agent.RegisterNode(ctx, connect.NewRequest(reg)); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("register without a certificate request: %v", err)
	}
	_, csr, _ := pki.NewRequest()
	reg.WorkerCsr = csr
	resp, err := agent.RegisterNode(ctx, connect.NewRequest(reg))
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, chain [][]byte) {
		t.Helper()
		if len(chain) != 2 {
			t.Fatalf("%s: a chain of %d", what, len(chain))
		}
		leaf, err := x509.ParseCertificate(chain[0])
		ca, err2 := x509.ParseCertificate(chain[1])
		if err != nil || err2 != nil || pki.PinOf(ca) != s.tls.workerPin {
			t.Fatalf("%s: %v %v", what, err, err2)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "gpu7.node.hac", Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	check("registration", resp.Msg.WorkerCertificate)
	hb, err := agent.Heartbeat(ctx, connect.NewRequest(&hacv1.HeartbeatRequest{Name: "gpu7", WorkerCsr: csr}))
	if err != nil {
		t.Fatal(err)
	}
	check("renewal", hb.Msg.WorkerCertificate)
	if hb, err := agent.Heartbeat(ctx, connect.NewRequest(&hacv1.HeartbeatRequest{Name: "gpu7"})); err != nil || len(hb.Msg.WorkerCertificate) != 0 {
		t.Fatalf("a heartbeat that asks for nothing: %v %v", hb, err)
	}
	if _, err := agent.Heartbeat(ctx, connect.NewRequest(&hacv1.HeartbeatRequest{Name: "gpu7", WorkerCsr: []byte("junk")})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a junk request: %v", err)
	}
	_, other, _ := pki.NewRequest()
	if _, err := agent.Heartbeat(ctx, connect.NewRequest(&hacv1.HeartbeatRequest{Name: "gpu7", WorkerCsr: other})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a renewal for another key: %v", err)
	}
	leaf, _ := x509.ParseCertificate(resp.Msg.WorkerCertificate[0])
	if _, _, pin, _ := s.broker.nodeKey("gpu7"); pin != pki.PinOf(leaf) {
		t.Fatalf("the node's key pin %q, want its certificate's %q", pin, pki.PinOf(leaf))
	}

	if got := token.PinIn(token.WithPin(token.New(token.JoinPrefix), s.Pin())); got != s.Pin() {
		t.Fatalf("a join token's pin: %s, want %s", got, s.Pin())
	}
	if st, err := os.Stat(filepath.Join(s.cfg.DataDir, "tls", "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", st, err)
	}
}
