package image

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkImageTransfer measures an image reaching a node (issue 14 point
// 5) without the network: Write into a pipe, Unpack from it (the digest
// checked), against copying the same tree with cp -a (the baseline), in
// the same iteration. HAC_BENCH_IMAGE_ROOT names the tree (an image's
// root; default /usr/lib/python3/dist-packages).
func BenchmarkImageTransfer(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("an image keeps its owners: needs root")
	}
	root := os.Getenv("HAC_BENCH_IMAGE_ROOT")
	if root == "" {
		root = "/usr/lib/python3/dist-packages"
	}
	digest, err := Digest(root) // also warms the page cache for both
	if err != nil {
		b.Fatal(err)
	}
	var size int64
	filepath.Walk(root, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			size += fi.Size()
		}
		return nil
	})
	var ours, cp time.Duration
	for b.Loop() {
		dir := b.TempDir()
		t0 := time.Now()
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(Write(root, pw)) }()
		if err := Unpack(pr, digest, filepath.Join(dir, "unpacked")); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		t0 = time.Now()
		if out, err := exec.Command("cp", "-a", root, filepath.Join(dir, "copy")).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, out)
		}
		cp += time.Since(t0)
		os.RemoveAll(dir)
	}
	mb := float64(size) / 1e6 * float64(b.N)
	b.ReportMetric(mb/ours.Seconds(), "write+unpack-MB/s")
	b.ReportMetric(mb/cp.Seconds(), "cp-a-MB/s")
	b.ReportMetric(float64(size)/1e6, "MB")
}
