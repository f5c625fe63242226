package runner

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
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
	// joined are the v1 hierarchy folders, by controller, that a sandbox's
	// init is in besides dir (memory and pids on hybrid hosts, where the
	// v2 hierarchy lacks them).
	joined map[string]string
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
	return filepath.Join(mount, ownCgroup(controller), "hac")
}

// ownCgroup is this process's cgroup in the hierarchy of controller, or in
// the cgroup v2 one for "", from /proc/self/cgroup ("/" when unknown).
func ownCgroup(controller string) string {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) < 3 {
			continue
		}
		if (controller == "" && f[0] == "0" && f[1] == "") || (controller != "" && slices.Contains(strings.Split(f[1], ","), controller)) {
			return f[2]
		}
	}
	return "/"
}

// limitFiles name each limited controller's file in v2 and in v1.
var limitFiles = map[string][2]string{"memory": {"memory.max", "memory.limit_in_bytes"}, "pids": {"pids.max", "pids.max"}}

// joinV1 puts pid in v1 hierarchy folders, beside dir, for the controllers
// that the v2 folder lacks (hybrid hosts). Moving a process between
// cgroups can take tens of milliseconds (the kernel waits for an RCU grace
// period), so it happens before a job needs the process.
func (c *cgroup) joinV1(pid int) error {
	for _, controller := range v1Limited {
		if _, err := os.Stat(filepath.Join(c.dir, limitFiles[controller][0])); err == nil || v1Root(controller) == "" {
			continue
		}
		if err := c.joinController(controller, pid); err != nil {
			return err
		}
	}
	return nil
}

func (c *cgroup) joinController(controller string, pid int) error {
	dir := v1Dir(controller, c.dir)
	os.MkdirAll(filepath.Dir(dir), 0o755)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("runner: %s cgroup: %w", controller, err)
	}
	if c.joined == nil {
		c.joined = map[string]string{}
	}
	c.joined[controller] = dir
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("runner: join %s: %w", dir, err)
	}
	return nil
}

// limit applies a sandbox's limits, in the v2 folder or the v1 one of each
// controller, and its device filter: a BPF program on the v2 folder, else
// the v1 devices controller, which pid then joins.
func (c *cgroup) limit(l Limits, devices []Device, filters *deviceFilters, pid int) error {
	if c.v1 {
		return errors.New("runner: a sandbox needs cgroup v2 (the freezer fallback cannot filter devices)")
	}
	for controller, value := range map[string]int64{"memory": l.MemoryBytes, "pids": l.Pids} {
		if value <= 0 {
			continue
		}
		path := filepath.Join(c.dir, limitFiles[controller][0])
		if dir, ok := c.joined[controller]; ok {
			path = filepath.Join(dir, limitFiles[controller][1])
		}
		if err := os.WriteFile(path, []byte(strconv.FormatInt(value, 10)), 0o644); err != nil {
			return fmt.Errorf("runner: no %s limit for the job (%v): enable the %s controller for the agent's cgroup", controller, err, controller)
		}
		if controller == "memory" {
			// No swapping past the limit, where the kernel accounts swap.
			if dir, ok := c.joined["memory"]; ok {
				os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), []byte(strconv.FormatInt(value, 10)), 0o644)
			} else {
				os.WriteFile(filepath.Join(c.dir, "memory.swap.max"), []byte("0"), 0o644)
			}
		}
	}
	rules := deviceRules(devices)
	err := filters.attach(c.dir, rules)
	if err == nil || v1Root("devices") == "" {
		return err
	}
	if err := c.joinController("devices", pid); err != nil {
		return err
	}
	return writeV1DeviceRules(c.joined["devices"], rules)
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
		return filepath.Join(mount, ownCgroup(""), "hac")
	}
	return ""
}

// freezerV1Root is where v1 freezer cgroups go on hosts without cgroup v2.
const freezerV1Root = "/sys/fs/cgroup/freezer/hac"

// newCgroup makes a new, empty cgroup named name under root (cgroup v2),
// else under the v1 freezer hierarchy. A cgroup of that name that exists
// already is an error: two jobs never share one.
func newCgroup(root, name string) (*cgroup, error) {
	for _, c := range []*cgroup{{dir: filepath.Join(root, name)}, {dir: filepath.Join(freezerV1Root, name), v1: true}} {
		if !c.v1 && root == "" {
			continue
		}
		os.MkdirAll(filepath.Dir(c.dir), 0o755)
		err := os.Mkdir(c.dir, 0o755)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("runner: cgroup %s exists already", c.dir)
		}
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
	for pause := 50 * time.Microsecond; len(c.pids()) > 0; pause = min(2*pause, 5*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("runner: cgroup %s still has processes %v after kill", c.dir, c.pids())
		}
		time.Sleep(pause)
	}
	return nil
}

// freeze freezes or thaws every process in the cgroup.
func (c *cgroup) freeze(frozen bool) error {
	file, value := "cgroup.freeze", map[bool]string{true: "1", false: "0"}[frozen]
	if c.v1 {
		file, value = "freezer.state", map[bool]string{true: "FROZEN", false: "THAWED"}[frozen]
	}
	return os.WriteFile(filepath.Join(c.dir, file), []byte(value), 0o644)
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
	dirs := []string{c.dir}
	for _, dir := range c.joined {
		dirs = append(dirs, dir)
	}
	for _, dir := range dirs {
		if err := removeCgroupDir(dir); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func removeCgroupDir(dir string) error {
	var err error
	deadline := time.Now().Add(time.Second)
	for pause := 50 * time.Microsecond; time.Now().Before(deadline); pause = min(2*pause, 5*time.Millisecond) {
		if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(pause)
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
			dir := v1Dir(controller, root)
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.IsDir() {
					removeCgroupDir(filepath.Join(dir, e.Name()))
				}
			}
		}
	}
	return swept
}

// RemoveRoot removes the folders Sweep and the jobs used under root, in
// cgroup v2 and the v1 hierarchies, once they are empty (an agent that
// stops leaves nothing behind).
func RemoveRoot(root string) {
	if root == "" {
		return
	}
	for _, controller := range append(v1Limited, "devices") {
		if v1Root(controller) != "" {
			os.Remove(v1Dir(controller, root))
		}
	}
	os.Remove(root)
}
