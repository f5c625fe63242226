package workspace

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFindChanges is the figure behind docs/decisions/0007: what a
// run pays to find what a server changed. Walking the whole root (here
// the host's /usr, a Debian 12 with PyTorch, as the server's image would
// be) is what a client must do alone; walking the server's writable
// layer, which the host shows it, costs in proportion to the changes.
// Each iteration is one run: read the hash cache, walk, save it.
func BenchmarkFindChanges(b *testing.B) {
	layer := func(n int) string {
		dir := b.TempDir()
		for i := 0; i < n; i++ {
			sub := filepath.Join(dir, fmt.Sprintf("pkg%03d", i/100))
			os.MkdirAll(sub, 0o755)
			os.WriteFile(filepath.Join(sub, fmt.Sprintf("m%d.py", i)), []byte(fmt.Sprintf("X = %d\n", i)), 0o644)
		}
		return dir
	}
	for _, tc := range []struct {
		name string
		root func() string
	}{
		{"whole-root=/usr", func() string { return "/usr" }},
		{"layer=200-files", func() string { return layer(200) }},
		{"layer=20000-files", func() string { return layer(20000) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			root := tc.root()
			cache := filepath.Join(b.TempDir(), "hashes")
			run := func() int {
				h := OpenHashCache(cache)
				h.racy = 0
				m, err := WalkLayer(root, func(string, bool) bool { return false }, h)
				if err != nil {
					b.Fatal(err)
				}
				if err := h.Save(); err != nil {
					b.Fatal(err)
				}
				return len(m.Files)
			}
			files := run() // the first run hashes everything
			b.ResetTimer()
			for b.Loop() {
				run()
			}
			b.ReportMetric(float64(files), "files")
		})
	}
}
