package integration

import (
	"os/exec"
	"slices"
	"testing"
	"time"
)

// timeRuns runs f b.N times and reports the median and 90th percentile.
func timeRuns(b *testing.B, f func() error) {
	var ds []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds())/1000, "p90-ms")
}

// BenchmarkRunTrue measures `hac run -- true` end to end on loopback: a new
// client process, allocation, workspace check, start, exit, release. The
// baseline, run in the same invocation, spawns `true` locally.
func BenchmarkRunTrue(b *testing.B) {
	if raceEnabled {
		b.Skip("timing with -race measures the race detector")
	}
	b.Run("baseline=local", func(b *testing.B) {
		timeRuns(b, func() error { return exec.Command("true").Run() })
	})
	c := newCluster(b, "fake:8x80GiB")
	env := c.serverEnv(c.register("bench", ""))
	dir := b.TempDir()
	b.Run("hac-run", func(b *testing.B) {
		timeRuns(b, func() error {
			cmd := exec.Command(hacBin, "run", "--", "true")
			cmd.Env, cmd.Dir = env, dir
			return cmd.Run()
		})
	})
}
