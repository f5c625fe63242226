package local

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hac-project/hac/internal/keypair"
	"github.com/hac-project/hac/internal/vm"
)

// sshBanner waits until addr answers with an SSH banner.
func sshBanner(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, rerr := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-2.0-") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no SSH banner from %s within %v", addr, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func report(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkCreateToSSH measures a new server from Create to an SSH banner
// through its public port (overlay, files, network, runc, sshd start,
// nftables rules), for each image (built before timing starts). The
// baseline starts the same, already prepared bundle directly with runc and
// waits for the banner on its private address: the floor any runc-based
// driver pays. Set HAC_BENCH_IMAGES=host to skip the debian-12 build.
func BenchmarkCreateToSSH(b *testing.B) {
	d := testDriver(b, "hacbench0", "10.80.0.0/24")
	ctx := context.Background()
	g, _ := keypair.Generate("ed25519", "bench")
	images := []string{"host", "debian-12"}
	if only := os.Getenv("HAC_BENCH_IMAGES"); only != "" {
		images = strings.Split(only, ",")
	}
	for _, image := range images {
		spec := func(id string) vm.Spec {
			return vm.Spec{ID: id, Hostname: id, CPUs: 1, MemoryMiB: 512, DiskBytes: 100e9, Image: image, Address: "10.80.0.2", AuthorizedKeys: []string{g.AuthorizedKey}}
		}
		if _, err := d.BuildImage(image); err != nil {
			b.Fatal(err)
		}
		b.Run("image="+image, func(b *testing.B) {
			var ds []time.Duration
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprintf("b%d", i)
				t0 := time.Now()
				if err := d.Create(ctx, spec(id)); err != nil {
					b.Fatal(err)
				}
				fwd := vm.Forward{Protocol: "tcp", PublicPort: 10922, Address: "10.80.0.2", PrivatePort: 22, Allow: []string{"0.0.0.0/0"}}
				if err := d.ApplyRules(ctx, vm.Rules{Forwards: []vm.Forward{fwd}}); err != nil {
					b.Fatal(err)
				}
				if err := sshBanner("127.0.0.1:10922", 30*time.Second); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
				b.StopTimer()
				d.Delete(ctx, id)
				b.StartTimer()
			}
			report(b, ds)
		})
		b.Run("image="+image+"/baseline=runc-run", func(b *testing.B) {
			if err := d.Create(ctx, spec("floor")); err != nil {
				b.Fatal(err)
			}
			defer d.Delete(ctx, "floor")
			runc := func(args ...string) error {
				return exec.Command("runc", append([]string{"--root", filepath.Join(d.cfg.DataDir, "runc")}, args...)...).Run()
			}
			var ds []time.Duration
			for b.Loop() {
				b.StopTimer()
				runc("delete", "--force", "hac-floor")
				b.StartTimer()
				t0 := time.Now()
				if err := runc("run", "--detach", "--bundle", d.bundle("floor"), "hac-floor"); err != nil {
					b.Fatal(err)
				}
				if err := sshBanner("10.80.0.2:22", 30*time.Second); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
			}
			report(b, ds)
		})
	}
}
