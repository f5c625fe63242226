package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hac-project/hac/internal/gpu"
	"github.com/hac-project/hac/internal/idmap"
	"github.com/hac-project/hac/internal/runner"
	"github.com/hac-project/hac/internal/ticket"
)

// UIDRange is the uids (and gids, the same numbers) that jobs run as.
type UIDRange struct{ First, Count int }

// DefaultJobUIDs is far from the ranges that distributions give users and
// /etc/subuid.
var DefaultJobUIDs = UIDRange{First: 3_000_000, Count: 100_000}

// ParseUIDRange parses FIRST-LAST, such as 3000000-3099999.
func ParseUIDRange(s string) (UIDRange, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || first < 1000 || last < first || last >= 1<<31-1 {
		return UIDRange{}, fmt.Errorf("agent: bad uid range %q: use FIRST-LAST with 1000 <= FIRST <= LAST, such as 3000000-3099999", s)
	}
	return UIDRange{First: first, Count: last - first + 1}, nil
}

// Where things are inside a job's sandbox.
const (
	jobHome    = "/home/hac-job"
	jobWork    = "/work" // the workspace when the client's path cannot be used
	jobFakeGPU = "/run/hac-fake-gpu"
	jobUser    = "hac-job"
)

// runtimePaths are the node's runtime, shown read-only to every job.
var runtimePaths = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

// maskedPaths are parts of the runtime that jobs must not read.
var maskedPaths = []string{"/etc/hac"}

// reservedTops are top-level folders a workspace cannot be shown in.
var reservedTops = []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "proc", "sys", "dev", "run", "boot", ".hac", ".old"}

// DefaultJobPids bounds a job's processes and threads.
const DefaultJobPids = 16384

// allocUID takes a uid no running job has.
func (a *Agent) allocUID() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.cfg.JobUIDs
	for i := 0; i < r.Count; i++ {
		uid := r.First + (a.nextUID+i)%r.Count
		if !a.uids[uid] {
			a.uids[uid] = true
			a.nextUID = (a.nextUID + i + 1) % r.Count
			return uid, nil
		}
	}
	return 0, errors.New("agent: every job uid is in use; widen --job-uids")
}

func (a *Agent) freeUID(uid int) {
	a.mu.Lock()
	delete(a.uids, uid)
	a.mu.Unlock()
}

// workDirInside is where the job sees its workspace: the client's own
// path when it is absolute, clean and clear of the runtime and the job's
// other folders, else /work.
func workDirInside(cwd string) string {
	if !filepath.IsAbs(cwd) || filepath.Clean(cwd) != cwd || cwd == "/" || strings.ContainsAny(cwd, "\x00\n") || len(cwd) > 1024 {
		return jobWork
	}
	top := strings.SplitN(strings.TrimPrefix(cwd, "/"), "/", 2)[0]
	if slices.Contains(reservedTops, top) {
		return jobWork
	}
	for _, other := range []string{"/tmp", jobHome} {
		if other == cwd || strings.HasPrefix(other, cwd+"/") {
			return jobWork
		}
	}
	return cwd
}

// jobFolders are a job's folders on the node, under its job folder (root's,
// 0700): the workspace, a home, a /tmp, the empty root the sandbox is
// assembled on, and the folder of simulated GPU allocations.
//
// A sandboxed job's workspace is an overlay whose upper folder is work:
// it also has that overlay's work folder (beside work, on its file
// system) and the stage of its idmapped lower layer. A job on its server's
// files also has its root overlay's upper and work folders and the stage
// of its idmapped layers. All those are root's.
type jobFolders struct {
	dir, work, home, tmp, root, gpu string
	upper, ovlWork, stage           string
	workStage                       string
}

func newJobFolders(dir string) jobFolders {
	return jobFolders{dir: dir, work: filepath.Join(dir, "work"), home: filepath.Join(dir, "home"),
		tmp: filepath.Join(dir, "tmp"), root: filepath.Join(dir, "root"), gpu: filepath.Join(dir, "gpu"),
		upper: filepath.Join(dir, "upper"), ovlWork: filepath.Join(dir, "ovl"), stage: filepath.Join(dir, "stage"),
		workStage: filepath.Join(dir, "work.stage")}
}

// workOverlay is overlayfs's work folder for the workspace's overlay.
func (f jobFolders) workOverlay() string { return f.work + ".ovl" }

// workBind shows the workspace at inside: over tree, the node's shared
// copy of the uploaded files (root's, shown as uid's), the job's writes
// going to its folder; or, without a tree, the folder alone. An attached
// job's writes come back to its client while it runs, so its overlay is
// volatile; a detached job's folder is its record: a program's fsync
// holds there.
func (f jobFolders) workBind(inside, tree string, uid int, detached bool) runner.Bind {
	b := runner.Bind{Source: f.work, Target: inside}
	if tree != "" {
		ids := []idmap.Map{{From: 0, To: uid, Count: 1}}
		b.Lower = []runner.Layer{{Dir: tree, UIDs: ids, GIDs: ids}}
		b.Work, b.Stage, b.Volatile = f.workOverlay(), f.workStage, !detached
	}
	return b
}

// make creates the folders; all but the root belong to uid (-1: the
// agent's own user, for unsandboxed jobs).
func (f jobFolders) make(uid int) error {
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	rootOwn := []string{f.root, f.upper, f.ovlWork, f.stage, f.workOverlay(), f.workStage}
	for _, d := range append([]string{f.work, f.home, f.tmp, f.gpu}, rootOwn...) {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if uid > 0 && !slices.Contains(rootOwn, d) {
			if err := os.Chown(d, uid, uid); err != nil {
				return err
			}
		}
	}
	// The upper folder's root is the job's /: root's, open to all.
	return os.Chmod(f.upper, 0o755)
}

// gpuNodes are the device nodes of the node's GPUs, found once when the
// node registers.
type gpuNodes struct {
	perGPU  map[string]gpu.Node
	control []gpu.Node
	err     error // only a sandbox needs them: its start says so
}

func findGPUNodes(devs []gpu.Device) gpuNodes {
	perGPU, control, err := gpu.Nodes(devs)
	return gpuNodes{perGPU: perGPU, control: control, err: err}
}

// sandbox describes a job's sandbox: the node's runtime read-only, its
// own /tmp, home and workspace, the GPUs it was granted and nothing else
// of the node or of other jobs.
func (a *Agent) sandbox(f jobFolders, uid int, c ticket.Claims, inside, tree string) (*runner.Sandbox, error) {
	a.mu.Lock()
	nodes := a.nodes
	a.mu.Unlock()
	if nodes.err != nil {
		return nil, nodes.err
	}
	s := &runner.Sandbox{
		UID: uid, GID: uid, Root: f.root,
		Runtime: runtimePaths,
		Binds: []runner.Bind{
			{Source: f.tmp, Target: "/tmp"},
			{Source: f.home, Target: jobHome},
			{Source: f.gpu, Target: jobFakeGPU},
			f.workBind(inside, tree, uid, c.Detached),
		},
		Masked:  maskedPaths,
		Devices: jobDevices(nodes, c),
		Files: []runner.File{
			{Path: "/etc/passwd", Content: withEntry("/etc/passwd", fmt.Sprintf("%s:x:%d:%d:hac job:%s:/bin/sh", jobUser, uid, uid, jobHome))},
			{Path: "/etc/group", Content: withEntry("/etc/group", fmt.Sprintf("%s:x:%d:", jobUser, uid))},
		},
		Limits: runner.Limits{MemoryBytes: a.jobMemory(len(c.GPUs)), Pids: a.cfg.JobPids},
	}
	return s, nil
}

// withEntry returns a host account file with the job's entry added.
func withEntry(path, entry string) string {
	raw, _ := os.ReadFile(path)
	var b strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" || strings.HasPrefix(line, jobUser+":") {
			continue
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(entry + "\n")
	return b.String()
}

// jobMemory is a job's memory.max: --job-memory when set, else the node's
// memory shared out by GPUs (a job with 2 of 8 GPUs gets a quarter), at
// least 1 GiB.
func (a *Agent) jobMemory(gpus int) int64 {
	if a.cfg.JobMemoryBytes > 0 {
		return a.cfg.JobMemoryBytes
	}
	total := a.memTotal
	n := len(a.devices())
	if total <= 0 || n == 0 {
		return 0
	}
	share := total / int64(n) * int64(max(gpus, 1))
	return max(share, 1<<30)
}

// memTotal is the node's memory in bytes, or 0 when unknown.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
