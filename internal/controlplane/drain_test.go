package controlplane

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// manyServers makes n servers, spread over users of 100 servers each (the
// default quotas), in few transactions, and returns their tokens.
func manyServers(t testing.TB, s *Server, n int) []string {
	ctx := context.Background()
	now := s.cfg.Now()
	var toks []string
	for first := 0; first < n; first += 100 {
		err := s.store.Update(ctx, func(tx *store.Tx) error {
			name := fmt.Sprintf("user%d", first/100)
			if _, err := tx.CreateUser(name, false, now); err != nil {
				return err
			}
			u, err := tx.UserByName(name)
			if err != nil {
				return err
			}
			for i := first; i < min(n, first+100); i++ {
				_, tok, err := addServer(tx, u, fmt.Sprintf("s%d", i), "small.16gb", "", now)
				if err != nil {
					return err
				}
				toks = append(toks, tok)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return toks
}

// serversOf returns the servers of server tokens.
func serversOf(t testing.TB, s *Server, toks []string) []store.Server {
	var srvs []store.Server
	err := s.store.View(context.Background(), func(tx *store.Tx) error {
		for _, tok := range toks {
			tk, err := tx.TokenByHash(token.Hash(tok))
			if err != nil {
				return err
			}
			srv, err := tx.ServerByID(tk.ServerID)
			if err != nil {
				return err
			}
			srvs = append(srvs, srv)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return srvs
}

// BenchmarkQueueDrain measures how fast a queue drains through the real
// API with durable commits (FULL): n clients, one server each, wait on
// Allocate while holders fill one node's 8 GPUs (40 shares of 16 GiB);
// then the holders end, and each client releases its grant as soon as it
// has it. The rate is jobs granted and released per second from the
// holders' end to the last release, and the processor time it took per
// job (this process's: the clients' included); n=100 is the baseline;
// heap-KiB/waiting is the live heap's growth per waiting client, both ends
// of its stream (they share this process) and its job. While it
// drains the node heartbeats every 50 ms: its latency must stay low, or a
// loaded control plane would declare a healthy node lost.
func BenchmarkQueueDrain(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("waiting=%d", n), func(b *testing.B) {
			_, _, s := testPool(b, store.Full, 0, 0, 0)
			agent := addNode(b, s, apiclient.New(s.Pin()), 1, 8)
			holders := manyServers(b, s, 40+n)
			toks := holders[40:]
			ctx := context.Background()
			var rates, beats, cpus, heaps []float64
			for b.Loop() {
				// Holders take the whole pool.
				srvs := serversOf(b, s, holders[:40])
				var held []int64
				for _, srv := range srvs {
					j, err := s.broker.submit(srv, 16384, 0, "hold", 0, false)
					if err != nil {
						b.Fatal(err)
					}
					held = append(held, j.ID)
				}
				heap0 := liveHeap()
				var clients sync.WaitGroup
				errs := make(chan error, n)
				var httpc connect.HTTPClient
				for i, tok := range toks {
					client := func() hacv1connect.AcceleratorServiceClient {
						return hacv1connect.NewAcceleratorServiceClient(httpc, s.URL(), connect.WithInterceptors(apiclient.Bearer(tok)))
					}
					if i%200 == 0 {
						// A connection per 200 streams, made before they start: a
						// transport that many requests find without one dials a
						// connection for each and then closes the spares.
						httpc = apiclient.New(s.Pin())
						if _, err := client().GetVersion(ctx, connect.NewRequest(&hacv1.GetVersionRequest{})); err != nil {
							b.Fatal(err)
						}
					}
					acc := client()
					clients.Add(1)
					go func() {
						defer clients.Done()
						if err := cycle(ctx, acc); err != nil {
							errs <- err
						}
					}()
				}
				for s.broker.waitingCount() < n {
					select {
					case err := <-errs:
						b.Fatalf("a client failed while the queue filled: %v", err)
					case <-time.After(10 * time.Millisecond):
					}
				}
				heaps = append(heaps, float64(liveHeap()-heap0)/1024/float64(n))
				stop := make(chan struct{})
				var lat []time.Duration
				beatDone := make(chan struct{})
				go func() {
					defer close(beatDone)
					for {
						select {
						case <-stop:
							return
						case <-time.After(50 * time.Millisecond):
						}
						t0 := time.Now()
						if _, err := agent.Heartbeat(ctx, connect.NewRequest(&hacv1.HeartbeatRequest{Name: "node1"})); err != nil {
							errs <- err
							return
						}
						lat = append(lat, time.Since(t0))
					}
				}()
				cpu0 := cpuTime()
				t0 := time.Now()
				for _, id := range held {
					if _, err := s.broker.end(id, store.JobCompleted, sql.NullInt64{Valid: true}, "", ""); err != nil {
						b.Fatal(err)
					}
				}
				clients.Wait()
				took := time.Since(t0)
				cpus = append(cpus, float64((cpuTime()-cpu0).Microseconds())/1000/float64(n))
				close(stop)
				<-beatDone
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				rates = append(rates, float64(n)/took.Seconds())
				slices.Sort(lat)
				if len(lat) > 0 {
					beats = append(beats, float64(lat[len(lat)*99/100].Microseconds())/1000)
				}
			}
			b.ReportMetric(median(rates), "jobs/s")
			b.ReportMetric(median(cpus), "cpu-ms/job")
			b.ReportMetric(median(heaps), "heap-KiB/waiting")
			if len(beats) > 0 {
				b.ReportMetric(median(beats), "heartbeat-p99-ms")
			}
		})
	}
}

// cpuTime is the processor time this process used, user and system (the
// clients' share included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// BenchmarkWaitingMemory measures what waiting jobs cost the control plane
// in memory: 100,000 jobs submitted to the broker (from 1,000 servers)
// while one job holds the whole pool; the figure is the live heap's growth
// per waiting job, after a collection. Their clients' streams are not in
// it: BenchmarkQueueDrain's heap-KiB/waiting has both.
func BenchmarkWaitingMemory(b *testing.B) {
	const n, servers = 100000, 1000
	for b.Loop() {
		_, _, s := testPool(b, store.Normal, 1, 1, 0)
		s.broker.cfg.Quotas.WaitingJobs = 0
		toks := manyServers(b, s, servers)
		srvs := serversOf(b, s, toks)
		whole := int64(80 * 1024)
		if _, err := s.broker.submit(srvs[0], whole, 0, "hold", 0, false); err != nil {
			b.Fatal(err)
		}
		before := liveHeap()
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 32 {
					if _, err := s.broker.submit(srvs[i%servers], whole, 0, "python3 train.py --epochs 10", 0, false); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if got := s.broker.waitingCount(); got != n {
			b.Fatalf("%d waiting, want %d", got, n)
		}
		grown := liveHeap() - before
		b.ReportMetric(float64(grown)/n, "bytes/waiting")
		b.ReportMetric(float64(grown)/(1<<20), "MiB/100k")
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
