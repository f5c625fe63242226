package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hac-project/hac/internal/gpu"
)

// watchMemory measures each job's GPU memory and ends a job that uses more
// than its accelerator model grants (SPEC A9), so that it never takes
// memory from another user's program sharing the GPU. It also feeds the
// usage that hac smi shows. It runs until ctx ends.
func (a *Agent) watchMemory(ctx context.Context) {
	rep, ok := a.cfg.GPUs.(gpu.UsageReporter)
	if !ok {
		return
	}
	every := a.cfg.MemoryInterval
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		usage, err := rep.ProcessUsage(ctx)
		if err != nil {
			continue
		}
		a.mu.Lock()
		jobs := make([]*jobRun, 0, len(a.jobs))
		for _, j := range a.jobs {
			jobs = append(jobs, j)
		}
		a.mu.Unlock()
		for _, j := range jobs {
			j.measure(usage)
		}
	}
}

// measure sums the job's processes' GPU memory and ends the job if it is
// over its limit.
func (j *jobRun) measure(usage map[int]int64) {
	j.mu.Lock()
	if j.job == nil {
		j.mu.Unlock()
		return
	}
	var used int64
	for _, pid := range j.job.Pids() {
		used += usage[pid]
	}
	j.usedMiB = used
	over := j.limitMiB > 0 && used > j.limitMiB
	j.mu.Unlock()
	if over {
		// The reason reaches the user as hac run's last line.
		j.kill(fmt.Sprintf("HAC AI Accelerator memory not enough: the program used %d MiB, more than the %d MiB of its accelerator model; use a larger model (hac switch-model) or less memory.", used, j.limitMiB))
	}
}

// resetFakeUsage forgets simulated allocations an earlier agent saw.
func (a *Agent) resetFakeUsage() {
	if f, ok := a.fakeGPU(); ok {
		os.RemoveAll(f.UsageDir())
	}
}

// fakeGPU returns the simulated GPUs, if the node has them.
func (a *Agent) fakeGPU() (gpu.Fake, bool) {
	switch p := a.cfg.GPUs.(type) {
	case gpu.Fake:
		return p, true
	case gpu.Auto:
		f, ok := p.Fallback.(gpu.Fake)
		return f, ok
	}
	return gpu.Fake{}, false
}

// fakeGPUEnv tells programs on simulated GPUs where to record their
// allocations, making the folder if needed.
func (a *Agent) fakeGPUEnv() []string {
	f, ok := a.fakeGPU()
	if !ok {
		return nil
	}
	if err := os.MkdirAll(f.UsageDir(), 0o755); err != nil {
		return nil
	}
	os.Chmod(f.UsageDir(), 0o1777) // any job's user may record, as in /tmp
	return []string{gpu.FakeUsageEnv + "=" + f.UsageDir()}
}
