package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// BenchmarkOutputStream measures what a program's output costs through a
// worker-style Connect stream over TLS on loopback: 64 MiB in 32 KiB
// messages (what the runner's copies send), with gzip (Connect's default,
// what the worker did before) and without (what it does now). The data is
// random bytes (incompressible: model weights, tensors) and log lines
// (text compresses about 5x). The baseline is the same bytes through a
// local pipe. Then 256 MiB of random bytes without gzip in messages of 32
// KiB to 4 MiB: the size the runner reads at once (runner.outputBuffer).
func BenchmarkOutputStream(b *testing.B) {
	const total, chunk = 64 << 20, 32 << 10
	random := make([]byte, chunk)
	rand.Read(random)
	var lines strings.Builder
	for i := 0; lines.Len() < chunk; i++ {
		fmt.Fprintf(&lines, "step %d loss %.6f lr 0.000300 grad-norm %.4f tokens/s %d\n", i, 2.0/float64(i+1), 1.0+float64(i%7)/10, 90000+i%1000)
	}
	text := []byte(lines.String()[:chunk])
	for _, data := range []struct {
		name  string
		chunk []byte
	}{{"random", random}, {"text", text}} {
		b.Run("data="+data.name+"/baseline=pipe", func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				r, w, _ := os.Pipe()
				go func() {
					for n := 0; n < total; n += chunk {
						w.Write(data.chunk)
					}
					w.Close()
				}()
				io.Copy(io.Discard, r)
				r.Close()
			}
		})
		for _, gzip := range []bool{true, false} {
			var opts []connect.HandlerOption
			if !gzip {
				opts = outputCompression
			}
			b.Run(fmt.Sprintf("data=%s/gzip=%v", data.name, gzip), func(b *testing.B) { streamOutput(b, data.chunk, total, opts...) })
		}
	}
	// The runner reads up to 256 KiB at once: what a message's size does.
	for _, size := range []int{32 << 10, 256 << 10, 1 << 20, 4 << 20} {
		msg := make([]byte, size)
		rand.Read(msg)
		b.Run(fmt.Sprintf("data=random/gzip=false/message=%dKiB", size>>10), func(b *testing.B) { streamOutput(b, msg, 256<<20, outputCompression...) })
	}
}

// streamOutput sends total bytes in messages of msg through a Connect
// server stream over TLS on loopback, once an iteration.
func streamOutput(b *testing.B, msg []byte, total int, opts ...connect.HandlerOption) {
	h := connect.NewServerStreamHandler("/bench.Out/Out", func(ctx context.Context, _ *connect.Request[hacv1.ExecRequest], s *connect.ServerStream[hacv1.ExecResponse]) error {
		m := &hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Stdout{Stdout: msg}}
		for n := 0; n < total; n += len(msg) {
			if err := s.Send(m); err != nil {
				return err
			}
		}
		return nil
	}, opts...)
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	client := connect.NewClient[hacv1.ExecRequest, hacv1.ExecResponse](srv.Client(), srv.URL+"/bench.Out/Out")
	b.SetBytes(int64(total))
	for b.Loop() {
		stream, err := client.CallServerStream(context.Background(), connect.NewRequest(&hacv1.ExecRequest{}))
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for stream.Receive() {
			got += len(stream.Msg().GetStdout())
		}
		if err := stream.Err(); err != nil || got < total {
			b.Fatalf("received %d bytes: %v", got, err)
		}
		stream.Close()
	}
}
