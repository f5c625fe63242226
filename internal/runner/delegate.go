package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// limitControllers are the cgroup v2 controllers a sandbox's limits need.
var limitControllers = []string{"memory", "pids"}

// (PrepareCgroups is exercised by every sandboxed test on hybrid hosts,
// where it finds nothing to do; its pure-v2 path needs such a host.)

// PrepareCgroups makes root (a folder under this process's own cgroup v2,
// as CgroupV2Root gives) able to hold limited job cgroups on a pure
// cgroup v2 host: it enables the memory and pids controllers in every
// folder from this process's cgroup down to root. Cgroup v2 lets a cgroup
// hand controllers to its children only if it has no processes of its
// own, so when this process sits in its cgroup (a systemd service with
// Delegate=yes, a login session), it first moves itself into a leaf
// beside root, "hac-agent". Where the v2 hierarchy lacks those
// controllers (hybrid hosts, where they are v1 hierarchies) it does
// nothing: limits go to v1. Call it once, with root computed before.
func PrepareCgroups(root string) error {
	if root == "" {
		return nil
	}
	i := strings.LastIndex(root+"/", "/hac/") // root is SELF/hac or SELF/hac/NODE
	if i <= 0 {
		return fmt.Errorf("runner: job cgroups %s are not under a hac folder", root)
	}
	self := root[:i]
	available := strings.Fields(readString(filepath.Join(self, "cgroup.controllers")))
	var want []string
	for _, c := range limitControllers {
		if slices.Contains(available, c) {
			want = append(want, c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	enable := "+" + strings.Join(want, " +")
	err := os.WriteFile(filepath.Join(self, "cgroup.subtree_control"), []byte(enable), 0o644)
	if errors.Is(err, syscall.EBUSY) {
		// Processes in self: move this one into a leaf of its own.
		leaf := filepath.Join(self, "hac-agent")
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("runner: cgroup for the agent: %w", err)
		}
		if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("runner: move the agent into %s: %w", leaf, err)
		}
		err = os.WriteFile(filepath.Join(self, "cgroup.subtree_control"), []byte(enable), 0o644)
	}
	if err != nil {
		return fmt.Errorf("runner: enable %s for job cgroups in %s: %w (other processes share the agent's cgroup: run hac agent as a systemd service with Delegate=yes, or in a cgroup of its own)", strings.Join(want, ", "), self, err)
	}
	// Then every folder down to root, whose children are the jobs.
	dir := self
	for _, part := range strings.Split(strings.TrimPrefix(root, self+"/"), "/") {
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(enable), 0o644); err != nil {
			return fmt.Errorf("runner: enable %s in %s: %w", strings.Join(want, ", "), dir, err)
		}
	}
	return nil
}

func readString(path string) string {
	raw, _ := os.ReadFile(path)
	return string(raw)
}
