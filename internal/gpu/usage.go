package gpu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// UsageReporter tells how much GPU memory each process uses. Providers
// that can say so implement it; the agent's memory watchdog uses it.
type UsageReporter interface {
	// ProcessUsage maps process ids to the GPU memory they hold, in MiB.
	ProcessUsage(ctx context.Context) (map[int]int64, error)
}

var (
	_ UsageReporter = NvidiaSMI{}
	_ UsageReporter = Auto{}
)

// ProcessUsage asks nvidia-smi for the compute processes on all GPUs.
func (NvidiaSMI) ProcessUsage(ctx context.Context) (map[int]int64, error) {
	out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return nil, fmt.Errorf("gpu: nvidia-smi: %w", err)
	}
	return ParseComputeApps(string(out))
}

// ParseComputeApps parses "pid, used_memory" CSV lines (MiB), summing a
// process that uses several GPUs.
func ParseComputeApps(out string) (map[int]int64, error) {
	usage := map[int]int64{}
	for n, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 2 {
			return nil, fmt.Errorf("gpu: nvidia-smi compute apps line %d: want 2 fields", n+1)
		}
		pid, err1 := strconv.Atoi(strings.TrimSpace(f[0]))
		mib, err2 := strconv.ParseInt(strings.TrimSpace(f[1]), 10, 64)
		if err1 != nil || err2 != nil || pid <= 0 || mib < 0 || mib > 1<<40 {
			return nil, fmt.Errorf("gpu: nvidia-smi compute apps line %d: %q", n+1, line)
		}
		usage[pid] += mib
	}
	return usage, nil
}

// FakeUsageEnv names the folder where a program on simulated GPUs
// "allocates" memory: it writes the MiB it holds into a file named by its
// pid, as a CUDA program's allocations would show in nvidia-smi. Each job
// has a folder of its own.
const FakeUsageEnv = "HAC_FAKE_GPU_DIR"

// FakeAllocations reads a job's simulated allocations: pid (as the job
// sees it) -> MiB. Files that are not a pid and a size are ignored.
func FakeAllocations(dir string) map[int]int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	usage := map[int]int64{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || !e.Type().IsRegular() {
			continue
		}
		// The job owns the folder: no symlinks followed, no FIFO waited on.
		f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			continue
		}
		raw := make([]byte, 32)
		n, _ := f.Read(raw)
		f.Close()
		if mib, err := strconv.ParseInt(strings.TrimSpace(string(raw[:n])), 10, 64); err == nil && mib >= 0 && mib < 1<<40 {
			usage[pid] = mib
		}
	}
	return usage
}

// ProcessUsage uses nvidia-smi when it answers, else the fallback's.
func (a Auto) ProcessUsage(ctx context.Context) (map[int]int64, error) {
	if u, err := (NvidiaSMI{}).ProcessUsage(ctx); err == nil {
		return u, nil
	}
	if r, ok := a.Fallback.(UsageReporter); ok {
		return r.ProcessUsage(ctx)
	}
	return map[int]int64{}, nil
}
