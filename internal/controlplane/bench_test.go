package controlplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/pki"
	"github.com/hac-project/hac/internal/store"
)

// testPlane starts a control plane on loopback with one node of gpus GPUs
// and n servers; it returns the API URL and the servers' tokens.
func testPlane(t testing.TB, d store.Durability, gpus, n int) (string, []string, *Server) {
	return testPool(t, d, 1, gpus, n)
}

// testPool is testPlane with nodes nodes.
func testPool(t testing.TB, d store.Durability, nodes, gpus, n int) (string, []string, *Server) {
	return testPoolWith(t, d, nodes, gpus, n, nil)
}

// testPoolWith is testPool whose configuration tune changes first.
func testPoolWith(t testing.TB, d store.Durability, nodes, gpus, n int, tune func(*Config)) (string, []string, *Server) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Durability = d
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if tune != nil {
		tune(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bootstrap(ctx, "admin"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	httpc := apiclient.New(s.Pin()) // one connection for all: the API caps connections per peer
	for nd := 1; nd <= nodes; nd++ {
		addNode(t, s, httpc, nd, gpus)
	}
	var u store.User
	if err := s.store.View(ctx, func(tx *store.Tx) error { u, err = tx.UserByName("admin"); return err }); err != nil {
		t.Fatal(err)
	}
	var toks []string
	for i := 0; i < n; i++ {
		_, tok, err := s.createServer(ctx, u, fmt.Sprintf("s%d", i), "small.16gb", "")
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	return s.URL(), toks, s
}

// addNode enrolls and registers node number nd with gpus 80 GiB GPUs,
// and returns its agent client.
func addNode(t testing.TB, s *Server, httpc connect.HTTPClient, nd, gpus int) hacv1connect.AgentServiceClient {
	ctx := context.Background()
	_, csr, err := pki.NewRequest()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("node%d", nd)
	cred, err := s.EnrollNode(ctx, name, "")
	if err != nil {
		t.Fatal(err)
	}
	agent := hacv1connect.NewAgentServiceClient(httpc, s.URL(), connect.WithInterceptors(apiclient.Bearer(cred)))
	req := &hacv1.RegisterNodeRequest{ProtocolVersion: hacv1.AgentProtocolVersion, Name: name, Address: "127.0.0.1:1", WorkerCsr: csr}
	for i := 0; i < gpus; i++ {
		req.Gpus = append(req.Gpus, &hacv1.GPU{Index: int32(i), Uuid: fmt.Sprintf("GPU-%d-%d", nd, i), MemoryMib: 80 * 1024})
	}
	if _, err := agent.RegisterNode(ctx, connect.NewRequest(req)); err != nil {
		t.Fatal(err)
	}
	return agent
}

// cycle allocates and releases once for a server token.
func cycle(ctx context.Context, acc hacv1connect.AcceleratorServiceClient) error {
	stream, err := acc.Allocate(ctx, connect.NewRequest(&hacv1.AllocateRequest{Command: []string{"true"}}))
	if err != nil {
		return err
	}
	var grant *hacv1.Grant
	for stream.Receive() {
		if g := stream.Msg().GetGrant(); g != nil {
			grant = g
			break
		}
	}
	stream.Close()
	if grant == nil {
		return fmt.Errorf("no grant: %v", stream.Err())
	}
	_, err = acc.Release(ctx, connect.NewRequest(&hacv1.ReleaseRequest{JobId: grant.JobId, HasExitCode: true}))
	return err
}

// BenchmarkAllocationCycle measures concurrent request -> grant -> release
// cycles through the real API on loopback: 64 servers, one 8-GPU node (and
// 1,000 such nodes, where the broker's warm snapshot matters), small.16gb
// (a share of a GPU, so that every server can hold one at once).
// The baseline is the same number of GetVersion calls: the API's floor.
func BenchmarkAllocationCycle(b *testing.B) {
	for _, tc := range []struct {
		name  string
		d     store.Durability
		nodes int
	}{{"durability=FULL", store.Full, 1}, {"durability=NORMAL", store.Normal, 1}, {"durability=FULL/nodes=1000", store.Full, 1000}} {
		b.Run(tc.name, func(b *testing.B) {
			url, toks, s := testPool(b, tc.d, tc.nodes, 8, 64)
			var next atomic.Int64
			b.SetParallelism(32) // 32 x GOMAXPROCS concurrent clients
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				tok := toks[next.Add(1)%int64(len(toks))]
				acc := hacv1connect.NewAcceleratorServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(tok)))
				for pb.Next() {
					if err := cycle(context.Background(), acc); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
		})
	}
	b.Run("baseline=GetVersion", func(b *testing.B) {
		url, toks, s := testPlane(b, store.Full, 8, 1)
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			acc := hacv1connect.NewAcceleratorServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(toks[0])))
			for pb.Next() {
				if _, err := acc.GetVersion(context.Background(), connect.NewRequest(&hacv1.GetVersionRequest{})); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}

// TestWarmSnapshotStaysExact runs allocation cycles, some concurrent, and
// checks that the broker's incrementally kept snapshot equals one built
// from scratch.
func TestWarmSnapshotStaysExact(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 4, 16)
	var wg sync.WaitGroup
	for i, tok := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc := hacv1connect.NewAcceleratorServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(tok)))
			for n := 0; n < 5+i%3; n++ {
				if err := cycle(context.Background(), acc); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Leave some jobs holding memory.
	for _, tok := range toks[:5] {
		acc := hacv1connect.NewAcceleratorServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(tok)))
		stream, err := acc.Allocate(context.Background(), connect.NewRequest(&hacv1.AllocateRequest{Command: []string{"x"}}))
		if err != nil {
			t.Fatal(err)
		}
		for stream.Receive() && stream.Msg().GetGrant() == nil {
		}
		stream.Close()
	}
	b := s.broker
	b.mu.Lock()
	defer b.mu.Unlock()
	warm := b.snapshotLocked().Clone()
	b.snap = nil
	cold := b.snapshotLocked()
	if !reflect.DeepEqual(warm.Nodes, cold.Nodes) {
		t.Fatalf("warm snapshot drifted:\nwarm %+v\ncold %+v", warm.Nodes, cold.Nodes)
	}
	var held int64
	for _, g := range cold.Nodes[0].GPUs {
		held += g.AllocatedMiB
	}
	if held != 5*16384 {
		t.Fatalf("held %d MiB, want 5 jobs of 16384", held)
	}
}
