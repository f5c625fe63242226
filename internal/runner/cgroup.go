package runner

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroup is one job's control group.
type cgroup struct {
	dir string
	v1  bool // a v1 freezer cgroup: the program moves itself in before exec
	// joined are v1 controller folders (memory, pids on hybrid hosts) that
	// a sandbox's init joins before the program starts.
	joined []string
}

// v1Limited are the controllers a sandbox takes from v1 hierarchies when
// the cgroup v2 folder lacks them (hybrid hosts).
var v1Limited = []string{"memory", "pids"}

// v1Dir returns the v1 hierarchy folder of controller for the job cgroup
// that has v2 folder dir: under this process's own cgroup there, at the
// same place relative to it as dir is to CgroupV2Root's parent.
func v1Dir(controller, dir string) string {
	rel := filepath.Base(filepath.Dir(dir)) + "/" + filepath.Base(dir)
	if v2 := CgroupV2Root(); v2 != "" {
		if r, err := filepath.Rel(v2, dir); err == nil && !strings.HasPrefix(r, "..") {
			rel = r
		}
	}
	return filepath.Join(v1Root(controller), rel)
}

// v1Root is the "hac" folder under this process's cgroup in the v1
// hierarchy of controller, or "" when there is none.
func v1Root(controller string) string {
	mount := filepath.Join("/sys/fs/cgroup", controller)
	if _, err := os.Stat(filepath.Join(mount, "cgroup.procs")); err != nil {
		return ""
	}
	self := "/"
	if raw, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			f := strings.SplitN(line, ":", 3)
			if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), controller) {
				self = f[2]
			}
		}
	}
	return filepath.Join(mount, self, "hac")
}

// limit applies a sandbox's limits and device filter before anything runs
// in the cgroup: in the v2 folder where its controllers are enabled, else
// in v1 hierarchies that the init joins.
func (c *cgroup) limit(l Limits, devices []Device) error {
	if c.v1 {
		return errors.New("runner: a sandbox needs cgroup v2 (the freezer fallback cannot filter devices)")
	}
	for _, x := range []struct {
		controller, v2, v1 string
		value              int64
	}{
		{"memory", "memory.max", "memory.limit_in_bytes", l.MemoryBytes},
		{"pids", "pids.max", "pids.max", l.Pids},
	} {
		if x.value <= 0 {
			continue
		}
		if err := os.WriteFile(filepath.Join(c.dir, x.v2), []byte(strconv.FormatInt(x.value, 10)), 0o644); err == nil {
			continue
		}
		root := v1Root(x.controller)
		if root == "" {
			return fmt.Errorf("runner: no %s controller for the job's limit (enable it for the agent's cgroup)", x.controller)
		}
		dir := v1Dir(x.controller, c.dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("runner: %s cgroup: %w", x.controller, err)
		}
		c.joined = append(c.joined, dir)
		if err := os.WriteFile(filepath.Join(dir, x.v1), []byte(strconv.FormatInt(x.value, 10)), 0o644); err != nil {
			return fmt.Errorf("runner: set %s: %w", x.v1, err)
		}
		if x.controller == "memory" {
			// Swap counts too where the kernel accounts it.
			os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), []byte(strconv.FormatInt(x.value, 10)), 0o644)
		}
	}
	rules := deviceRules(devices)
	err := attachDeviceFilter(c.dir, rules)
	if err == nil {
		return nil
	}
	if v1Root("devices") == "" {
		return err
	}
	dir := v1Dir("devices", c.dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("runner: devices cgroup: %w", err)
	}
	c.joined = append(c.joined, dir)
	return writeV1DeviceRules(dir, rules)
}

// join moves pid into the v1 controller folders.
func (c *cgroup) join(pid int) error {
	for _, dir := range c.joined {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("runner: join %s: %w", dir, err)
		}
	}
	return nil
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

// remove deletes the (empty) cgroup and its v1 controller folders.
func (c *cgroup) remove() error {
	var first error
	for _, dir := range append([]string{c.dir}, c.joined...) {
		if err := removeCgroupDir(dir); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func removeCgroupDir(dir string) error {
	var err error
	for i := 0; i < 100; i++ {
		if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
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
	// The v1 controller folders of swept (or half-made) sandboxes.
	if root != "" {
		for _, controller := range append(v1Limited, "devices") {
			dir := v1Dir(controller, filepath.Join(root, "x"))
			entries, _ := os.ReadDir(filepath.Dir(dir))
			for _, e := range entries {
				if e.IsDir() {
					removeCgroupDir(filepath.Join(filepath.Dir(dir), e.Name()))
				}
			}
		}
	}
	return swept
}
