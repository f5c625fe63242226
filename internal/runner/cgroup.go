package runner

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroup is one job's control group.
type cgroup struct {
	dir string
	v1  bool // a v1 freezer cgroup: the program moves itself in before exec
}

// CgroupV2Root returns the cgroup v2 directory where job cgroups go: the
// unified mount (pure v2, or /sys/fs/cgroup/unified on hybrid hosts), under
// the agent's own cgroup, in a "hac" subtree. It returns "" when there is no
// cgroup v2 mount.
func CgroupV2Root() string {
	for _, mount := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(filepath.Join(mount, "cgroup.controllers")); err != nil {
			continue
		}
		self := "/"
		if raw, err := os.ReadFile("/proc/self/cgroup"); err == nil {
			for _, line := range strings.Split(string(raw), "\n") {
				if p, ok := strings.CutPrefix(line, "0::"); ok {
					self = p
				}
			}
		}
		return filepath.Join(mount, self, "hac")
	}
	return ""
}

// freezerV1Root is where v1 freezer cgroups go on hosts without cgroup v2.
const freezerV1Root = "/sys/fs/cgroup/freezer/hac"

func newCgroup(root, name string) (*cgroup, error) {
	if root != "" {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err == nil {
			return &cgroup{dir: dir}, nil
		}
	}
	dir := filepath.Join(freezerV1Root, name)
	if err := os.MkdirAll(dir, 0o755); err == nil {
		return &cgroup{dir: dir, v1: true}, nil
	}
	return nil, errors.New("runner: no writable cgroup (v2 or v1 freezer)")
}

// pids lists the processes in the cgroup.
func (c *cgroup) pids() []int {
	f, err := os.Open(filepath.Join(c.dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int
	s := bufio.NewScanner(f)
	for s.Scan() {
		if pid, err := strconv.Atoi(strings.TrimSpace(s.Text())); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// kill kills every process in the cgroup and waits until it is empty.
func (c *cgroup) kill() error {
	if !c.v1 {
		if err := os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0o644); err != nil {
			// Kernels before 5.14 have no cgroup.kill: freeze, kill, thaw.
			c.freezeKill("cgroup.freeze", "1", "0")
		}
	} else {
		c.freezeKill("freezer.state", "FROZEN", "THAWED")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(c.pids()) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("runner: cgroup %s still has processes %v after kill", c.dir, c.pids())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// freezeKill stops the group from forking while every member gets SIGKILL.
func (c *cgroup) freezeKill(file, freeze, thaw string) {
	path := filepath.Join(c.dir, file)
	os.WriteFile(path, []byte(freeze), 0o644)
	for _, pid := range c.pids() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	os.WriteFile(path, []byte(thaw), 0o644)
}

// remove deletes the (empty) cgroup.
func (c *cgroup) remove() error {
	var err error
	for i := 0; i < 100; i++ {
		if err = os.Remove(c.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("runner: remove cgroup: %w", err)
}

// Sweep kills and removes job cgroups left under root by an earlier agent
// process, and returns their names.
func Sweep(root string) []string {
	var swept []string
	for _, r := range []string{root, freezerV1Root} {
		entries, err := os.ReadDir(r)
		if r == "" || err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			c := &cgroup{dir: filepath.Join(r, e.Name()), v1: r == freezerV1Root}
			c.kill()
			c.remove()
			swept = append(swept, e.Name())
		}
	}
	return swept
}
