package integration

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRunTrue measures `hac run -- true` end to end on loopback: a new
// client process, allocation, workspace check, start, exit, release. Each
// iteration runs it once through an agent with the job sandbox and once
// through one without (--no-sandbox), in turns, so that the machine's
// drift weighs on both alike; the baseline spawns `true` locally. The
// sandbox's cost is the median of the differences within iterations.
func BenchmarkRunTrue(b *testing.B) {
	if raceEnabled {
		b.Skip("timing with -race measures the race detector")
	}
	if os.Geteuid() != 0 {
		b.Skip("the job sandbox needs root")
	}
	dir := b.TempDir()
	run := func(args ...string) func() error {
		c := newCluster(b)
		c.agentArgs = args
		c.addAgent("node1", "fake:8x80GiB")
		env := c.serverEnv(c.register("bench", ""))
		return func() error {
			cmd := exec.Command(hacBin, "run", "--", "true")
			cmd.Env, cmd.Dir = env, dir
			return cmd.Run()
		}
	}
	modes := []benchMode{
		{"local", func() error { return exec.Command("true").Run() }},
		{"no-sandbox", run("--no-sandbox")},
		{"sandbox", run()},
	}
	times := inTurns(b, modes)
	reportPercentiles(b, differences(times[2], times[1]), "sandbox-cost-")
}

// benchMode is one way of doing what a benchmark times.
type benchMode struct {
	name string
	run  func() error
}

// inTurns runs every mode once per iteration, each taking each place in
// turn so that the machine's drift weighs on all alike, reports each
// mode's percentiles, and returns the times by mode and iteration.
func inTurns(b *testing.B, modes []benchMode) [][]time.Duration {
	times := make([][]time.Duration, len(modes))
	i := 0
	for b.Loop() {
		for k := range modes {
			m := (k + i) % len(modes)
			t0 := time.Now()
			if err := modes[m].run(); err != nil {
				b.Fatalf("%s: %v", modes[m].name, err)
			}
			times[m] = append(times[m], time.Since(t0))
		}
		i++
	}
	for m, mode := range modes {
		reportPercentiles(b, append([]time.Duration(nil), times[m]...), mode.name+"-")
	}
	return times
}

// differences are a[i]-b[i]: what one mode costs over another within each
// iteration.
func differences(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

// reportPercentiles reports the median and 90th percentile of ds.
func reportPercentiles(b *testing.B, ds []time.Duration, prefix string) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, prefix+"p50-ms")
	b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds())/1000, prefix+"p90-ms")
}

// BenchmarkRunOutput measures a program's output through `hac run`: 256
// MiB on stdout, into a pipe the benchmark drains, against the same
// command run locally into the same kind of pipe (the baseline). The data
// is zeros (head) or random (one random MiB written 256 times, which gzip,
// with its 32 KiB window, cannot shrink: as model weights).
func BenchmarkRunOutput(b *testing.B) {
	if raceEnabled {
		b.Skip("timing with -race measures the race detector")
	}
	const size = 256 << 20
	c := newCluster(b)
	c.addAgent("node1", "fake:8x80GiB")
	env := c.serverEnv(c.register("bench", ""))
	dir := b.TempDir()
	run := func(b *testing.B, argv ...string) {
		b.SetBytes(size)
		for b.Loop() {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env, cmd.Dir, cmd.Stdout = env, dir, io.Discard
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	}
	random := []string{"/usr/bin/python3", "-c", "import os, sys\nb = os.urandom(1 << 20)\nfor _ in range(256): sys.stdout.buffer.write(b)"}
	for _, data := range []struct {
		name string
		argv []string
	}{{"zeros", []string{"head", "-c", fmt.Sprint(size), "/dev/zero"}}, {"random", random}} {
		b.Run("data="+data.name+"/baseline=local", func(b *testing.B) { run(b, data.argv...) })
		b.Run("data="+data.name+"/hac-run", func(b *testing.B) { run(b, append([]string{hacBin, "run", "--"}, data.argv...)...) })
	}
}

// BenchmarkWorkspace measures a workspace's trip through `hac run`, each
// against a local baseline in the same iteration: a folder of 64 files of
// 4 MiB of random bytes (256 MiB).
//   - first: every file changed (new content: the node has none of it),
//     then `hac run -- true`; baseline `tar -cf - . | tar -xf -` into a
//     new folder.
//   - unchanged: `hac run -- true` again; the same tar baseline. What
//     the re-upload itself costs (reupload) is that run's time less a run
//     of `hac run -- true` from an empty folder, the same iteration.
//   - syncback: `hac run -- sh -c 'cat data/* > out.bin'`, whose 256 MiB
//     come back; baseline the same command run locally.
//
// Each reports the median ratio of hac's time to its baseline's
// (x-of-baseline) and the medians themselves.
func BenchmarkWorkspace(b *testing.B) {
	if raceEnabled {
		b.Skip("timing with -race measures the race detector")
	}
	const files, fileSize = 64, 4 << 20
	c := newCluster(b)
	c.addAgent("node1", "fake:8x80GiB")
	env := c.serverEnv(c.register("bench", ""))
	dir := b.TempDir()
	if err := os.Mkdir(dir+"/data", 0o755); err != nil {
		b.Fatal(err)
	}
	fill := func() {
		buf := make([]byte, fileSize)
		for i := range files {
			rand.Read(buf)
			if err := os.WriteFile(fmt.Sprintf("%s/data/f%02d", dir, i), buf, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	fill()
	timedIn := func(dir, name string, args ...string) time.Duration {
		// Each from a clean page cache: the writeback of what the last
		// step wrote would slow whichever step came next.
		syscall.Sync()
		cmd := exec.Command(name, args...)
		cmd.Env, cmd.Dir = env, dir
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return time.Since(t0)
	}
	timed := func(name string, args ...string) time.Duration { return timedIn(dir, name, args...) }
	tarCopy := func() time.Duration {
		dst := b.TempDir()
		return timed("sh", "-c", "tar -cf - . | tar -C "+dst+" -xf -")
	}
	syncBack := []string{"sh", "-c", "cat data/* > out.bin"}
	type sample struct{ hac, base []time.Duration }
	empty := b.TempDir()
	var first, unchanged, reupload, back sample
	for b.Loop() {
		fill()
		// Files written within 2 s of a walk are read again by the next
		// one (the hash cache's racy-clean rule, as git's index): a user
		// runs a moment after saving.
		time.Sleep(2100 * time.Millisecond)
		first.hac = append(first.hac, timed(hacBin, "run", "--", "true"))
		first.base = append(first.base, tarCopy())
		run := timed(hacBin, "run", "--", "true")
		unchanged.hac = append(unchanged.hac, run)
		unchanged.base = append(unchanged.base, tarCopy())
		reupload.hac = append(reupload.hac, max(run-timedIn(empty, hacBin, "run", "--", "true"), 0))
		reupload.base = append(reupload.base, unchanged.base[len(unchanged.base)-1])
		back.base = append(back.base, timed(syncBack[0], syncBack[1:]...))
		os.Remove(dir + "/out.bin")
		back.hac = append(back.hac, timed(hacBin, append([]string{"run", "--"}, syncBack...)...))
		os.Remove(dir + "/out.bin")
	}
	for _, r := range []struct {
		name string
		s    sample
	}{{"first", first}, {"unchanged", unchanged}, {"reupload", reupload}, {"syncback", back}} {
		ratios := make([]float64, len(r.s.hac))
		for i := range ratios {
			ratios[i] = float64(r.s.hac[i]) / float64(r.s.base[i])
		}
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], r.name+"-x-of-baseline")
		slices.Sort(r.s.hac)
		slices.Sort(r.s.base)
		b.ReportMetric(float64(r.s.hac[len(r.s.hac)/2].Microseconds())/1000, r.name+"-hac-ms")
		b.ReportMetric(float64(r.s.base[len(r.s.base)/2].Microseconds())/1000, r.name+"-baseline-ms")
	}
}

// BenchmarkRunTrueOnImage measures what running on a server's own files
// costs `hac run -- true` (issue 14 point 5): a server registered with an
// image and an unchanged virtualenv of 200 files (the client walks it, the
// node finds its layers made, the sandbox mounts the overlay and its
// idmapped layers) against one on the node's own files, in turns within
// each iteration. The cost is the median of the differences.
func BenchmarkRunTrueOnImage(b *testing.B) {
	if raceEnabled {
		b.Skip("timing with -race measures the race detector")
	}
	c := portalCluster(b)
	venv := filepath.Join(b.TempDir(), "venv")
	for i := 0; i < 200; i++ {
		p := filepath.Join(venv, "lib/python3.11/site-packages", fmt.Sprintf("pkg%d", i/20), fmt.Sprintf("m%d.py", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(fmt.Sprintf("X = %d\n", i)), 0o644)
	}
	plain := c.serverEnv(c.register("plain", ""))
	r := c.hac(nil, "", "server", "register", "onimage", "--image", "host")
	tok := regexp.MustCompile(`hacs_[A-Z0-9]+`).FindString(r.stdout)
	if tok == "" {
		b.Fatalf("register: %+v", r)
	}
	onImage := append(c.serverEnv(tok), "VIRTUAL_ENV="+venv)
	dir := b.TempDir()
	run := func(env []string) func() error {
		return func() error {
			cmd := exec.Command(hacBin, "run", "--", "true")
			cmd.Env, cmd.Dir = env, dir
			return cmd.Run()
		}
	}
	modes := []benchMode{{"node-files", run(plain)}, {"server-image", run(onImage)}}
	if err := modes[1].run(); err != nil { // the image reaches the node
		b.Fatal(err)
	}
	times := inTurns(b, modes)
	reportPercentiles(b, differences(times[1], times[0]), "image-cost-")
}

// BenchmarkEnvironmentShip measures newly installed packages reaching a
// node (issue 14 point 5): a virtualenv of HAC_BENCH_ENV_MB (512 by
// default) in 4 MiB files, new to the node, shipped by the first `hac run
// -- true` of a server registered with an image, against copying the same
// folder locally (cp -a, the baseline); then the next run, which ships
// nothing, against a run with no environment.
func BenchmarkEnvironmentShip(b *testing.B) {
	if raceEnabled {
		b.Skip("timing with -race measures the race detector")
	}
	mb := 512
	if v, err := strconv.Atoi(os.Getenv("HAC_BENCH_ENV_MB")); err == nil && v > 0 {
		mb = v
	}
	c := portalCluster(b)
	r := c.hac(nil, "", "server", "register", "onimage", "--image", "host")
	tok := regexp.MustCompile(`hacs_[A-Z0-9]+`).FindString(r.stdout)
	if tok == "" {
		b.Fatalf("register: %+v", r)
	}
	dir := b.TempDir()
	hacRun := func(env []string) time.Duration {
		t0 := time.Now()
		cmd := exec.Command(hacBin, "run", "--", "true")
		cmd.Env, cmd.Dir = env, dir
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("hac run: %v\n%s", err, out)
		}
		return time.Since(t0)
	}
	hacRun(c.serverEnv(tok)) // the image reaches the node
	for b.Loop() {
		// Not under /tmp: the job has its own.
		base, err := os.MkdirTemp("/srv", "hac-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(base) })
		venv := filepath.Join(base, "venv")
		chunk := make([]byte, 4<<20)
		for i := 0; i < mb/4; i++ {
			rand.Read(chunk)
			p := filepath.Join(venv, "lib/python3.11/site-packages", fmt.Sprintf("pkg%d", i/16), fmt.Sprintf("lib%d.so", i))
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, chunk, 0o644)
		}
		exec.Command("sync").Run()
		t0 := time.Now()
		if out, err := exec.Command("cp", "-a", venv, filepath.Join(b.TempDir(), "copy")).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, out)
		}
		local := time.Since(t0)
		env := append(c.serverEnv(tok), "VIRTUAL_ENV="+venv)
		first := hacRun(env)
		next := hacRun(env)
		none := hacRun(c.serverEnv(tok))
		b.ReportMetric(float64(mb)/local.Seconds(), "local-copy-MB/s")
		b.ReportMetric(float64(mb)/first.Seconds(), "first-run-MB/s")
		b.ReportMetric(float64(next.Microseconds())/1000, "next-run-ms")
		b.ReportMetric(float64(none.Microseconds())/1000, "no-environment-ms")
	}
}
