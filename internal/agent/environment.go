package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/gpu"
	"github.com/hac-project/hac/internal/idmap"
	"github.com/hac-project/hac/internal/image"
	"github.com/hac-project/hac/internal/runner"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/workspace"
)

// A job of a server made by hac runs on its server's own files (SPEC A7):
// the job's root is an overlay of the server's changes (shipped by its
// client, kept by layerStore) over the server's image (fetched by digest,
// kept by images), with the workspace at the client's path, the job's own
// /tmp, and the node's GPUs: device nodes and driver files. The program
// runs as the node's job uid in the place of the server's user, whose
// files it owns through an idmapped mount.

// jobOS is what a job's root is made of.
type jobOS struct {
	image   string   // the image's root on the node
	layers  []string // the server's changes, top first
	uid     uint32   // the client's uid and gid in the server
	gid     uint32
	hostUsr bool
	// user and home name the client's account where the root's own
	// /etc/passwd lacks its uid (a registered machine's user).
	user, home string
	release    func()
}

// checkEnvironment refuses a Start whose ticket names an image but that
// brings no valid layer of the server's.
func checkEnvironment(c ticket.Claims, env *hacv1.Environment) error {
	if c.Image == "" {
		return nil // the node's own files: an environment is not used
	}
	if env == nil || env.Layer == nil {
		return errors.New("the job runs on its server's files, but hac on the server sent none: upgrade hac on the server")
	}
	if env.Uid >= 65536 || env.Gid >= 65536 {
		return fmt.Errorf("the server's user has uid %d and gid %d: ids from 65536 up cannot be mapped onto the node's", env.Uid, env.Gid)
	}
	return workspace.ValidateLayer(env.Layer)
}

// imageWait is an image on its way to the node.
type imageWait struct {
	done chan struct{}
	root string
	err  error
}

// startImage starts making sure the node has an image.
func (a *Agent) startImage(ctx context.Context, digest string) *imageWait {
	w := &imageWait{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.root, w.err = a.images.root(ctx, digest)
	}()
	return w
}

// fitsCache refuses a job whose files exceed the node's cache, naming the
// largest folders so that the user knows what to leave out.
func (a *Agent) fitsCache(m *hacv1.Manifest) error {
	limit, total := a.cache.Cap(), workspace.TotalSize(m)
	if limit <= 0 || total <= limit {
		return nil
	}
	sizes := map[string]int64{}
	for _, f := range m.Files {
		parts := strings.SplitN(f.Path, "/", 4)
		top := strings.Join(parts[:min(len(parts)-1, 3)], "/")
		if top == "" {
			top = f.Path
		}
		sizes[top] += f.Size
	}
	tops := make([]string, 0, len(sizes))
	for t := range sizes {
		tops = append(tops, t)
	}
	sort.Slice(tops, func(i, j int) bool { return sizes[tops[i]] > sizes[tops[j]] })
	var largest []string
	for _, t := range tops[:min(len(tops), 5)] {
		largest = append(largest, fmt.Sprintf("%s (%s)", t, mib(sizes[t])))
	}
	return fmt.Errorf("the workspace and the server's files hold %s, more than this node's cache of %s; the largest: %s. Leave out what jobs do not need (list it in the workspace's .hacignore, or for the server's other files in ~/.hacignore), or ask the operator for a larger --cache", mib(total), mib(limit), strings.Join(largest, ", "))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// prepareOS waits for the server's image and makes its changes into
// layers over it.
func (a *Agent) prepareOS(c ticket.Claims, env *hacv1.Environment, cwd string, image *imageWait) (*jobOS, error) {
	<-image.done
	if image.err != nil {
		return nil, image.err
	}
	covered := ""
	if dir := osWorkDir(cwd); dir != jobWork {
		covered = strings.TrimPrefix(dir, "/")
	}
	layers, release, err := a.layers.prepare(c.Server, env.Layer, env.Uid, env.Gid, image.root, covered)
	if err != nil {
		return nil, err
	}
	jos := &jobOS{image: image.root, layers: layers, uid: env.Uid, gid: env.Gid, hostUsr: c.HostUsr, release: release}
	jos.user, jos.home = account(env)
	return jos, nil
}

// account is the client's user name and home as a job's /etc/passwd may
// hold them: what could add a line or a field to it is replaced.
func account(env *hacv1.Environment) (user, home string) {
	user, home = jobUser, "/tmp"
	if accountName.MatchString(env.User) {
		user = env.User
	}
	if filepath.IsAbs(env.Home) && filepath.Clean(env.Home) == env.Home && !strings.ContainsAny(env.Home, ":\n\x00") {
		home = env.Home
	}
	return user, home
}

// accountName is a user name that may go into a job's /etc/passwd.
var accountName = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}$`)

// osReserved are the top folders of a job's root that a workspace cannot
// be shown in.
var osReserved = []string{"proc", "sys", "dev", ".hac", ".old"}

// osWorkDir is where a job on its server's files sees its workspace: the
// client's own folder, unless it is /, /tmp or in a folder the sandbox
// makes itself; then /work.
func osWorkDir(cwd string) string {
	if !filepath.IsAbs(cwd) || filepath.Clean(cwd) != cwd || cwd == "/" || cwd == "/tmp" || strings.ContainsAny(cwd, "\x00\n") || len(cwd) > 1024 ||
		slices.Contains(osReserved, strings.SplitN(strings.TrimPrefix(cwd, "/"), "/", 2)[0]) {
		return jobWork
	}
	return cwd
}

// osSandbox is the sandbox of a job on its server's files, with the
// folder the program starts in and its environment.
func (a *Agent) osSandbox(f jobFolders, uid int, c ticket.Claims, start *hacv1.Start, files jobFiles) (*runner.Sandbox, string, []string, error) {
	jos := files.jos
	a.mu.Lock()
	nodes := a.nodes
	a.mu.Unlock()
	if nodes.err != nil {
		return nil, "", nil, nodes.err
	}
	inside := osWorkDir(start.Cwd)
	if uid < 65536 {
		return nil, "", nil, fmt.Errorf("job uid %d: a job on its server's files needs job uids from 65536 up (hac agent --job-uids), above the server's own ids", uid)
	}
	uids, gids := idmap.Swap(int(jos.uid), uid), idmap.Swap(int(jos.gid), uid)
	lower := make([]runner.Layer, 0, len(jos.layers)+1)
	for _, d := range jos.layers {
		lower = append(lower, runner.Layer{Dir: d, UIDs: uids, GIDs: gids})
	}
	lower = append(lower, runner.Layer{Dir: jos.image})
	passwd, home := accountFile(jos, "etc/passwd", jos.uid, uid)
	group, _ := accountFile(jos, "etc/group", jos.gid, uid)
	var runtime []string
	if jos.hostUsr {
		runtime = append(runtime, image.HostPaths...)
	}
	runtime = append(runtime, gpu.DriverFiles()...)
	s := &runner.Sandbox{
		UID: uid, GID: uid, Root: f.root,
		// The root's writes go with the job.
		OS:      &runner.Overlay{Lower: lower, Upper: f.upper, Work: f.ovlWork, Stage: f.stage, Volatile: true},
		Runtime: runtime,
		Binds: []runner.Bind{
			{Source: f.tmp, Target: "/tmp"},
			{Source: f.gpu, Target: jobFakeGPU},
			f.workBind(inside, files.tree, uid, c.Detached),
		},
		Masked:  maskedPaths,
		Devices: jobDevices(nodes, c),
		Files: []runner.File{
			{Path: "/etc/passwd", Content: passwd},
			{Path: "/etc/group", Content: group},
		},
		Limits: runner.Limits{MemoryBytes: a.jobMemory(len(c.GPUs)), Pids: a.cfg.JobPids},
	}
	// The server's PATH, HOME and library paths hold in its own files.
	extra := []string{"PWD=" + inside}
	if v, ok := clientVar(start.Env, "LD_LIBRARY_PATH"); ok {
		extra = append(extra, "LD_LIBRARY_PATH="+v)
	}
	if a.simulated() {
		extra = append(extra, gpu.FakeUsageEnv+"="+jobFakeGPU)
	}
	clientPath, _ := clientVar(start.Env, "PATH")
	clientHome, _ := clientVar(start.Env, "HOME")
	if !path.IsAbs(clientHome) {
		clientHome = ""
	}
	env := jobEnv(start.Env, c, clientPath, cmp.Or(clientHome, home, jos.home), start.Tty, extra...)
	return s, inside, env, nil
}

// accountFile is the job root's /etc/passwd or /etc/group with the server
// user's (or group's) id made the job's uid; a root without one gets an
// entry for the job's user. For /etc/passwd it also says the user's home.
func accountFile(jos *jobOS, rel string, serverID uint32, uid int) (content, home string) {
	const field = 2 // the uid of a passwd line, the gid of a group line
	raw, _ := readShown(jos.layers, jos.image, rel, 4<<20)
	var b strings.Builder
	found := false
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) > field+1 && f[field] == strconv.Itoa(int(serverID)) && !found {
			found = true
			f[field] = strconv.Itoa(uid)
			if rel == "etc/passwd" && len(f) == 7 {
				f[3], home = strconv.Itoa(uid), f[5]
			}
			line = strings.Join(f, ":")
		}
		b.WriteString(line + "\n")
	}
	if !found {
		if rel == "etc/passwd" {
			fmt.Fprintf(&b, "%s:x:%d:%d:hac job:%s:/bin/sh\n", jos.user, uid, uid, jos.home)
			home = jos.home
		} else {
			fmt.Fprintf(&b, "%s:x:%d:\n", jos.user, uid)
		}
	}
	return b.String(), home
}

// jobDevices are the node's GPU device nodes for a job: its own granted.
func jobDevices(nodes gpuNodes, c ticket.Claims) []runner.Device {
	var devices []runner.Device
	for uuid, n := range nodes.perGPU {
		devices = append(devices, runner.Device{Path: n.Path, Major: n.Major, Minor: n.Minor, Allow: slices.Contains(c.GPUs, uuid)})
	}
	slices.SortFunc(devices, func(x, y runner.Device) int { return strings.Compare(x.Path, y.Path) })
	for _, n := range nodes.control {
		devices = append(devices, runner.Device{Path: n.Path, Major: n.Major, Minor: n.Minor, Allow: true})
	}
	return devices
}

func clientVar(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
