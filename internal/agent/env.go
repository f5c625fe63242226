package agent

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/hac-project/hac/internal/ticket"
)

// nodeOwned are variables the node sets itself; the client's values are
// dropped.
var nodeOwned = []string{"PATH", "HOME", "LD_PRELOAD", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
	"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "PWD", "OLDPWD"}

// NodeSets reports whether the node sets the variable itself, dropping a
// client's value.
func NodeSets(key string) bool {
	return strings.HasPrefix(key, "HAC_") || slices.Contains(nodeOwned, key)
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// jobEnv builds a job's environment: the client's variables (already
// stripped of secrets by the client) minus what the node owns, then PATH
// (empty: the node's), the job's HOME and the accelerator variables.
func jobEnv(client []string, c ticket.Claims, path, home string, tty bool, extra ...string) []string {
	var env []string
	for _, kv := range client {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || NodeSets(k) {
			continue
		}
		env = append(env, kv)
	}
	path = cmp.Or(path, os.Getenv("PATH"), defaultPath)
	env = append(env,
		"PATH="+path,
		"HOME="+home,
		"CUDA_VISIBLE_DEVICES="+strings.Join(c.GPUs, ","),
		fmt.Sprintf("HAC_ACCELERATOR_MEMORY=%d", c.MemoryMiB),
		"HAC_ACCELERATOR_MODEL="+c.Model,
		fmt.Sprintf("HAC_JOB_ID=%d", c.JobID),
		fmt.Sprintf("HAC_NODE_RANK=%d", c.Rank),
		fmt.Sprintf("HAC_NUM_NODES=%d", c.Nodes),
	)
	if len(c.GPUs) == 1 {
		// A share of one GPU: MPS enforces the limit where the node runs it.
		env = append(env, fmt.Sprintf("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=%s=%dM", c.GPUs[0], c.MemoryMiB))
	}
	env = append(env, extra...)
	if !tty && !hasKey(env, "PYTHONUNBUFFERED") {
		// Without a terminal Python buffers its output; training progress
		// should stream live, as it would locally on a terminal.
		env = append(env, "PYTHONUNBUFFERED=1")
	}
	return env
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}
