package runner

import "testing"

// BenchmarkStartTrue runs `true` as a job: plainly in a cgroup (the
// baseline) and in a sandbox with limits, what the sandbox costs per job
// when jobs start one after another (each finds a warm init).
func BenchmarkStartTrue(b *testing.B) {
	run := func(b *testing.B, sandbox bool) {
		l := NewLauncher(CgroupV2Root())
		defer l.Close()
		for b.Loop() {
			var s Spec
			if sandbox {
				s, _, _ = sandboxSpec(b, "bench", "true")
				s.Sandbox.Limits = Limits{MemoryBytes: 1 << 30, Pids: 1000}
			} else {
				s, _, _ = spec(b, "bench", "true")
			}
			j, err := l.Start(s)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := j.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("baseline=cgroup", func(b *testing.B) { run(b, false) })
	b.Run("sandbox", func(b *testing.B) { run(b, true) })
}
