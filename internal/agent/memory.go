package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/hac-project/hac/internal/gpu"
)

// watchMemory measures each job's GPU memory and ends a job that uses more
// than its accelerator model grants (SPEC A9), so that it never takes
// memory from another user's program sharing the GPU. It also feeds the
// usage that hac smi shows. It runs until ctx ends.
func (a *Agent) watchMemory(ctx context.Context) {
	rep, _ := a.cfg.GPUs.(gpu.UsageReporter)
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
		var usage map[int]int64
		if rep != nil {
			usage, _ = rep.ProcessUsage(ctx)
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

// measure sums the job's processes' GPU memory (from the driver by node
// pid, or from the job's own simulated allocations by its pids) and ends
// the job if it is over its limit.
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
	if j.fakeDir != "" {
		pids := j.job.NSPids()
		for pid, mib := range gpu.FakeAllocations(j.fakeDir) {
			if _, alive := pids[pid]; alive {
				used += mib
			}
		}
	}
	j.usedMiB = used
	over := j.limitMiB > 0 && used > j.limitMiB
	j.mu.Unlock()
	if over {
		// The reason reaches the user as hac run's last line.
		j.kill(fmt.Sprintf("HAC AI Accelerator memory not enough: the program used %d MiB, more than the %d MiB of its accelerator model; use a larger model (hac switch-model) or less memory.", used, j.limitMiB))
	}
}
