package gpu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// UsageReporter tells how much GPU memory each process uses. Providers
// that can say so implement it; the agent's memory watchdog uses it.
type UsageReporter interface {
	// ProcessUsage maps process ids to the GPU memory they hold, in MiB.
	ProcessUsage(ctx context.Context) (map[int]int64, error)
}

var (
	_ UsageReporter = NvidiaSMI{}
	_ UsageReporter = Fake{}
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

// FakeUsageEnv names the folder where programs on simulated GPUs "allocate"
// memory: a program writes the MiB it holds into a file named by its pid,
// as a CUDA program's allocations would show in nvidia-smi.
const FakeUsageEnv = "HAC_FAKE_GPU_DIR"

// UsageDir is the folder of a fake provider's allocations.
func (f Fake) UsageDir() string {
	return filepath.Join(os.TempDir(), "hac-fake-gpu-"+f.Seed)
}

// ProcessUsage reads the simulated allocations of live processes.
func (f Fake) ProcessUsage(context.Context) (map[int]int64, error) {
	entries, err := os.ReadDir(f.UsageDir())
	if err != nil {
		return map[int]int64{}, nil
	}
	usage := map[int]int64{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := filepath.Join(f.UsageDir(), e.Name())
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			os.Remove(p) // the process is gone, and its memory with it
			continue
		}
		raw, _ := os.ReadFile(p)
		if mib, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64); err == nil && mib >= 0 {
			usage[pid] = mib
		}
	}
	return usage, nil
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
