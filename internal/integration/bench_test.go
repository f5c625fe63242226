package integration

import (
	"os"
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
// baselines, run in the same invocation, spawn `true` locally and run it
// through an agent without the job sandbox (--no-sandbox), which is what
// the sandbox costs.
func BenchmarkRunTrue(b *testing.B) {
	if raceEnabled {
		b.Skip("timing with -race measures the race detector")
	}
	b.Run("baseline=local", func(b *testing.B) {
		timeRuns(b, func() error { return exec.Command("true").Run() })
	})
	for _, mode := range []struct {
		name string
		args []string
	}{{"hac-run/no-sandbox", []string{"--no-sandbox"}}, {"hac-run/sandbox", nil}} {
		if mode.args == nil && os.Geteuid() != 0 {
			continue
		}
		c := newCluster(b)
		c.agentArgs = mode.args
		c.addAgent("node1", "fake:8x80GiB")
		env := c.serverEnv(c.register("bench", ""))
		dir := b.TempDir()
		b.Run(mode.name, func(b *testing.B) {
			timeRuns(b, func() error {
				cmd := exec.Command(hacBin, "run", "--", "true")
				cmd.Env, cmd.Dir = env, dir
				return cmd.Run()
			})
		})
	}
}
