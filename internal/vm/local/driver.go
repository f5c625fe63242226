package local

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/crypto/ssh"

	"github.com/hac-project/hac/internal/vm"
)

// Config configures the local driver.
type Config struct {
	DataDir string
	// Bridge is the host bridge servers attach to.
	Bridge string
	// Subnet holds the servers' private addresses; its first address is the
	// gateway, on the bridge.
	Subnet string
	// PublicAddress is where forwarded ports listen (127.0.0.1 in dev).
	PublicAddress string
	// HacBinary is copied into every server as /usr/local/bin/hac.
	HacBinary string
	// Runc is the runc binary.
	Runc string
	// Mirror is the Debian mirror images are built from.
	Mirror string
	// ImageCache, when set, keeps the downloaded part of image builds
	// (the debian-12 base), keyed by what went into it, for the next
	// build on the machine (a data folder made afresh, CI).
	ImageCache string
	// Table is the nftables table (family ip) the driver owns.
	Table string
	// IDBase is the host uid and gid of new servers' root (userns.go).
	IDBase int
}

// DefaultConfig returns a configuration for a single machine.
func DefaultConfig(dataDir string) Config {
	exe, _ := os.Executable()
	return Config{DataDir: dataDir, Bridge: "hacbr0", Subnet: "10.77.0.0/24", PublicAddress: "127.0.0.1", HacBinary: exe, Runc: "runc",
		Mirror: "http://deb.debian.org/debian", Table: "hac", IDBase: DefaultIDBase}
}

// Driver is the local server driver.
type Driver struct {
	cfg     Config
	subnet  *net.IPNet
	gateway net.IP
	mu      sync.Mutex // one change at a time
	imageMu sync.Mutex // one image build at a time, beside other changes
	// digests are the images' digests (ImageDigest), computed once.
	digestMu sync.Mutex
	digests  map[string]string
	// ctx ends with Close, stopping image builds.
	ctx   context.Context
	close context.CancelFunc
}

var _ vm.Driver = (*Driver)(nil)

// New checks the configuration and that runc and nft are present.
func New(cfg Config) (*Driver, error) {
	_, subnet, err := net.ParseCIDR(cfg.Subnet)
	if err != nil || subnet.IP.To4() == nil {
		return nil, fmt.Errorf("vm/local: subnet %q: want an IPv4 CIDR such as 10.77.0.0/24", cfg.Subnet)
	}
	if ones, _ := subnet.Mask.Size(); ones > 28 {
		return nil, fmt.Errorf("vm/local: subnet %s is too small", cfg.Subnet)
	}
	if cfg.Table == "" || strings.Trim(cfg.Table, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return nil, fmt.Errorf("vm/local: nftables table %q: use lower-case letters, digits and _", cfg.Table)
	}
	if net.ParseIP(cfg.PublicAddress).To4() == nil {
		return nil, fmt.Errorf("vm/local: public address %q: want an IPv4 address", cfg.PublicAddress)
	}
	for _, tool := range []string{cfg.Runc, "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("vm/local: %s not found: install runc and nftables (scripts/install-deps)", tool)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("vm/local: the local server driver needs root (namespaces, mounts, nftables)")
	}
	// Mount points are compared with /proc/self/mountinfo, which shows
	// absolute paths with no symbolic links in them.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("vm/local: data folder: %w", err)
	}
	if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err == nil {
		cfg.DataDir, err = filepath.EvalSymlinks(cfg.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("vm/local: data folder: %w", err)
	}
	gw := make(net.IP, 4)
	copy(gw, subnet.IP.To4())
	gw[3]++
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{cfg: cfg, subnet: subnet, gateway: gw, ctx: ctx, close: cancel, digests: map[string]string{}}
	go d.digestImages()
	return d, nil
}

// Close stops image builds in progress. Servers keep running.
func (d *Driver) Close() { d.close() }

// Images lists the images servers can be made from, with a description.
func (d *Driver) Images() map[string]string { return Images }

// DefaultImage is the image of a server created without one.
func (d *Driver) DefaultImage() string { return DefaultImage }

// Gateway is the host's address on the servers' bridge: where servers reach
// the control plane and the node agents.
func (d *Driver) Gateway() string { return d.gateway.String() }

// Subnet is the servers' private network.
func (d *Driver) Subnet() *net.IPNet { return d.subnet }

// PublicAddress is where forwarded ports listen.
func (d *Driver) PublicAddress() string { return d.cfg.PublicAddress }

func (d *Driver) dir(id string) string    { return filepath.Join(d.cfg.DataDir, "servers", id) }
func (d *Driver) bundle(id string) string { return filepath.Join(d.dir(id), "bundle") }
func containerID(id string) string        { return "hac-" + id }

func (d *Driver) runc(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, d.cfg.Runc, append([]string{"--root", filepath.Join(d.cfg.DataDir, "runc")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("runc %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Create builds the server's root (overlay over the image), its files, its
// network and its bundle, and starts it. On failure it leaves nothing.
func (d *Driver) Create(ctx context.Context, s vm.Spec) error {
	if err := validID(s.ID); err != nil {
		return err
	}
	if _, err := d.BuildImage(s.Image); err != nil {
		return err
	}
	d.mu.Lock()
	err := d.createLocked(ctx, s)
	d.mu.Unlock()
	if err != nil {
		d.Delete(context.WithoutCancel(ctx), s.ID)
	}
	return err
}

func (d *Driver) createLocked(ctx context.Context, s vm.Spec) error {
	lower, err := d.ensureImage(s.Image)
	if err != nil {
		return err
	}
	dir := d.dir(s.ID)
	if err := os.MkdirAll(d.bundle(s.ID), 0o755); err != nil {
		return err
	}
	// The overlay keeps its marks (opaque folders) in user.overlay.*
	// attributes, which the server's client reads in its layer view; a
	// server made before keeps trusted.overlay.* (userXattr).
	if err := os.WriteFile(filepath.Join(dir, "userxattr"), nil, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "idbase"), []byte(strconv.Itoa(d.cfg.IDBase)), 0o644); err != nil {
		return err
	}
	rootfs := d.rootfs(s.ID)
	for _, p := range []string{filepath.Join(dir, "bin"), rootfs} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	if s.DiskBytes > 0 {
		if err := makeDisk(filepath.Join(dir, "disk.img"), s.DiskBytes); err != nil {
			return err
		}
	}
	if err := d.mountRoot(s.ID, lower); err != nil {
		return err
	}
	if err := d.writeFiles(s, rootfs); err != nil {
		return err
	}
	if err := d.installHac(filepath.Join(dir, "bin")); err != nil {
		return err
	}
	cfg := ociSpec(s.ID, s.Hostname, s.Image, "/run/netns/"+netnsName(s.ID), rootfs, d.runDir(s.ID), max(s.CPUs, 1), max(s.MemoryMiB, 256), d.cfg.IDBase)
	raw, _ := json.MarshalIndent(cfg, "", " ")
	if err := os.WriteFile(filepath.Join(d.bundle(s.ID), "config.json"), raw, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "address"), []byte(s.Address), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "image"), []byte(s.Image), 0o644); err != nil {
		return err
	}
	return d.startLocked(ctx, s.ID)
}

// PublicPortInUse reports whether something on the host listens on the
// public address's port: a forward's DNAT would take its traffic.
func (d *Driver) PublicPortInUse(protocol string, port int) bool {
	addr := net.JoinHostPort(d.cfg.PublicAddress, strconv.Itoa(port))
	var err error
	switch protocol {
	case "tcp":
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			ln.Close()
		}
	case "udp":
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err == nil {
			pc.Close()
		}
	}
	return errors.Is(err, syscall.EADDRINUSE)
}

func validID(id string) error {
	if id == "" || len(id) > 10 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return fmt.Errorf("vm/local: server id %q: use 1-10 of [a-z0-9-]", id)
	}
	return nil
}

// runDir is where a server in a user namespace has its root and hac's
// binaries mounted: under /run, in folders its root's group may pass
// through (0710, as Docker's userns-remap folders), unlike the driver's
// data folder (0700). The folder is named
// after the data folder, so that two drivers never share one.
func (d *Driver) runDir(id string) string {
	abs, _ := filepath.Abs(d.cfg.DataDir)
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join("/run/hac-servers", hex.EncodeToString(sum[:6]), id)
}

// rootfs is a server's root: in runDir, or, for a server made before user
// namespaces, in its bundle.
func (d *Driver) rootfs(id string) string {
	if d.idBaseOf(id) < 0 {
		return filepath.Join(d.bundle(id), "rootfs")
	}
	return filepath.Join(d.runDir(id), "rootfs")
}

// mountRoot mounts a server's root (and, in a user namespace, its view of
// hac's binaries) unless mounted already.
func (d *Driver) mountRoot(id, lower string) error {
	rootfs, base := d.rootfs(id), d.idBaseOf(id)
	if base >= 0 {
		// Only the servers' root group (and the host's root) may pass.
		for _, p := range []string{"/run/hac-servers", filepath.Dir(d.runDir(id)), d.runDir(id)} {
			if err := os.MkdirAll(p, 0o710); err != nil {
				return err
			}
			if err := os.Chown(p, 0, base); err != nil {
				return err
			}
			os.Chmod(p, 0o710)
		}
		bin := filepath.Join(d.runDir(id), "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			return err
		}
		if !mounted(bin) {
			if err := syscall.Mount(filepath.Join(d.dir(id), "bin"), bin, "", syscall.MS_BIND, ""); err != nil {
				return fmt.Errorf("vm/local: bind hac's binaries for %s: %w", id, err)
			}
		}
		if err := os.MkdirAll(rootfs, 0o755); err != nil {
			return err
		}
	}
	if mounted(rootfs) {
		return nil
	}
	dir, err := d.mountDisk(id)
	if err != nil {
		return err
	}
	if base >= 0 {
		shifted := filepath.Join(d.dir(id), "lower")
		if !mounted(shifted) {
			if err := mountShifted(lower, shifted, base); err != nil {
				return err
			}
		}
		lower = shifted
		// The root folder of the server is its root's.
		if err := os.Lchown(filepath.Join(dir, "upper"), base, base); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if _, err := os.Stat(filepath.Join(d.dir(id), "userxattr")); err == nil {
		opts += ",userxattr"
	}
	if err := syscall.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("vm/local: mount the root of %s: %w", id, err)
	}
	return nil
}

// A server's root disk is a sparse ext4 image of its type's size,
// DIR/disk.img, loop-mounted at DIR/disk, holding the overlay's upper and
// work folders: what the server writes over its image cannot pass the
// size. Servers made before disks have neither and write to DIR.

// makeDisk makes a sparse disk image of size bytes with an ext4 file
// system (lazy initialisation: tens of milliseconds for 100 GB).
func makeDisk(img string, size int64) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("vm/local: root disk: %w", err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return fmt.Errorf("vm/local: root disk: %w", err)
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm/local: make the root disk's file system (mkfs.ext4, e2fsprogs): %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// mountDisk mounts a server's root disk, once, and returns the folder for
// the overlay's upper and work folders.
func (d *Driver) mountDisk(id string) (string, error) {
	dir := d.dir(id)
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk")
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		mnt = dir // made before root disks
	} else if !mounted(mnt) {
		if err := os.MkdirAll(mnt, 0o700); err != nil {
			return "", err
		}
		if out, err := exec.Command("mount", "-o", "loop,nosuid,nodev", img, mnt).CombinedOutput(); err != nil {
			return "", fmt.Errorf("vm/local: mount the root disk of %s: %v: %s", id, err, bytes.TrimSpace(out))
		}
	}
	for _, p := range []string{filepath.Join(mnt, "upper"), filepath.Join(mnt, "work")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return "", err
		}
	}
	return mnt, nil
}

// bindReadOnly shows the folder src read-only at target, once.
func bindReadOnly(src, target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if mounted(target) {
		return nil
	}
	if err := syscall.Mount(src, target, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("vm/local: bind %s: %w", src, err)
	}
	if err := syscall.Mount("", target, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		syscall.Unmount(target, syscall.MNT_DETACH)
		return fmt.Errorf("vm/local: make %s read-only: %w", target, err)
	}
	return nil
}

// addLayerMount shows a server its own writable layer (LayerPath): what
// its users changed of the image, which hac run ships to GPU nodes. A
// server made before LayerPath existed gets it from its next start on.
func (d *Driver) addLayerMount(id string) error {
	if d.idBaseOf(id) < 0 {
		return nil
	}
	dir, err := d.mountDisk(id)
	if err != nil {
		return err
	}
	if err := bindReadOnly(filepath.Join(dir, "upper"), filepath.Join(d.runDir(id), "layer")); err != nil {
		return err
	}
	p := filepath.Join(d.bundle(id), "config.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("vm/local: %s: %w", p, err)
	}
	for _, m := range spec.Mounts {
		if m.Destination == LayerPath {
			return nil
		}
	}
	spec.Mounts = append(spec.Mounts, layerMount(d.runDir(id)))
	raw, _ = json.MarshalIndent(&spec, "", " ")
	return os.WriteFile(p, raw, 0o644)
}

// mountsUnder lists the mount points at or below dir, from mountinfo.
func mountsUnder(dir string) []string {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	return points
}

// mounted reports whether p is a mount point.
func mounted(p string) bool { return slices.Contains(mountsUnder(p), p) }

// writeFiles writes the host key, the authorized keys and the spec's files
// into the server's root.
func (d *Driver) writeFiles(s vm.Spec, rootfs string) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		return err
	}
	files := []vm.File{
		{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: pem.EncodeToMemory(block)},
		{Path: "/etc/ssh/authorized_keys/ubuntu", Mode: 0o644, Data: []byte(strings.Join(s.AuthorizedKeys, "\n") + "\n")},
		{Path: "/etc/hostname", Mode: 0o644, Data: []byte(s.Hostname + "\n")},
		{Path: "/etc/hosts", Mode: 0o644, Data: []byte(fmt.Sprintf("127.0.0.1 localhost\n%s %s\n%s hac-gateway\n", s.Address, s.Hostname, d.gateway))},
	}
	base := d.idBaseOf(s.ID)
	for _, f := range append(files, s.Files...) {
		if !filepath.IsAbs(f.Path) || strings.Contains(f.Path, "..") {
			return fmt.Errorf("vm/local: file path %q must be absolute and clean", f.Path)
		}
		p := filepath.Join(rootfs, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, f.Mode); err != nil {
			return err
		}
		if err := shiftOwner(p, f.UID, f.GID, base); err != nil {
			return err
		}
		// Folders made for a user's file belong to that user.
		if f.UID != 0 {
			for dir := filepath.Dir(p); strings.HasPrefix(dir, filepath.Join(rootfs, "home")+"/"); dir = filepath.Dir(dir) {
				shiftOwner(dir, f.UID, f.GID, base)
			}
		}
	}
	return nil
}

// installHac copies the hac binary into the server's /usr/local/bin with
// its alias names.
func (d *Driver) installHac(bin string) error {
	src, err := os.ReadFile(d.cfg.HacBinary)
	if err != nil {
		return fmt.Errorf("vm/local: read the hac binary: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bin, "hac"), src, 0o755); err != nil {
		return err
	}
	for _, alias := range []string{"hac-smi", "hac-switch-model"} {
		os.Remove(filepath.Join(bin, alias))
		if err := os.Symlink("hac", filepath.Join(bin, alias)); err != nil {
			return err
		}
	}
	return nil
}

// Start starts a created server.
func (d *Driver) Start(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.startLocked(ctx, id)
}

func (d *Driver) startLocked(ctx context.Context, id string) error {
	if st, _ := d.statusLocked(ctx, id); st == vm.Running {
		return nil
	}
	if _, err := os.Stat(filepath.Join(d.bundle(id), "config.json")); err != nil {
		return fmt.Errorf("%w: %s", vm.ErrNotFound, id)
	}
	addr, err := os.ReadFile(filepath.Join(d.dir(id), "address"))
	if err != nil {
		return err
	}
	image, err := os.ReadFile(filepath.Join(d.dir(id), "image"))
	if err != nil {
		return err
	}
	lower, err := d.ensureImage(string(image))
	if err != nil {
		return err
	}
	if err := d.mountRoot(id, lower); err != nil {
		return err
	}
	if err := d.addLayerMount(id); err != nil {
		return err
	}
	d.teardownNetwork(id)
	if err := d.setupNetwork(id, string(addr)); err != nil {
		return err
	}
	d.runc(ctx, "delete", "--force", containerID(id))
	console := filepath.Join(d.dir(id), "console.log")
	w, logger, logged, err := d.startConsoleLogger(console)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, d.cfg.Runc, "--root", filepath.Join(d.cfg.DataDir, "runc"), "run", "--detach",
		"--bundle", d.bundle(id), containerID(id))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, w, w
	err = cmd.Run()
	w.Close() // the container's init holds the pipe now, if it runs
	if err != nil {
		select {
		case <-logged:
		case <-time.After(time.Second):
		}
		tail, _ := os.ReadFile(console)
		return fmt.Errorf("vm/local: start %s: %v: %s", id, err, lastLine(tail))
	}
	joinServerCgroups(id, logger)
	return nil
}

// joinServerCgroups moves the console logger into its server's cgroups:
// out of hac serve's, so that a service manager that stops hac serve
// with its whole cgroup (systemd's KillMode=control-group) leaves it, and
// into the server's limits. Best effort: a logger left behind still logs
// until hac serve stops.
func joinServerCgroups(id string, pid int) {
	for _, dir := range serverCgroupDirs(id) {
		os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	}
}

// serverCgroupDirs are a server's cgroup folders: one per v1 hierarchy,
// and the v2 one (runc's CgroupsPath /hac-servers/ID).
func serverCgroupDirs(id string) []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/hac-servers/" + id)
	return append(dirs, "/sys/fs/cgroup/hac-servers/"+id)
}

// startConsoleLogger starts a server's console logger (console.go) on
// path and returns the pipe's end to write to, its pid, and a channel
// closed when the logger ends.
func (d *Driver) startConsoleLogger(path string) (*os.File, int, <-chan struct{}, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, 0, nil, err
	}
	defer r.Close()
	logger := exec.Command(d.cfg.HacBinary, path, strconv.Itoa(consoleMaxBytes))
	logger.Args[0] = consoleLoggerArg0
	logger.Stdin = r
	logger.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := logger.Start(); err != nil {
		w.Close()
		return nil, 0, nil, fmt.Errorf("vm/local: start the console logger: %w", err)
	}
	done := make(chan struct{})
	go func() { logger.Wait(); close(done) }()
	return w, logger.Process.Pid, done, nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// Stop stops a server; its disk stays.
func (d *Driver) Stop(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.runc(ctx, "kill", containerID(id), "KILL")
	d.runc(ctx, "delete", "--force", containerID(id))
	removeServerCgroups(id)
	d.teardownNetwork(id)
	return nil
}

// removeServerCgroups removes a stopped server's cgroups, which its
// console logger kept (runc leaves a busy cgroup): the logger ends at the
// end of its input, once the server's processes are gone; one still there
// after a second is killed.
func removeServerCgroups(id string) {
	dirs := serverCgroupDirs(id)
	for wait := 0; ; wait++ {
		busy := false
		for _, dir := range dirs {
			raw, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			for _, f := range strings.Fields(string(raw)) {
				busy = true
				if pid, err := strconv.Atoi(f); err == nil && wait >= 20 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if !busy || wait > 40 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, dir := range dirs {
		os.Remove(dir)
	}
}

// Delete removes the container, its namespace, its mounts and its files.
func (d *Driver) Delete(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	d.Stop(ctx, id)
	d.mu.Lock()
	defer d.mu.Unlock()
	// The root, then the layers under it (the disk's loop device goes
	// with it).
	run := d.runDir(id)
	for _, m := range []string{d.rootfs(id), filepath.Join(run, "bin"), filepath.Join(run, "layer"), filepath.Join(d.dir(id), "lower"), filepath.Join(d.dir(id), "disk")} {
		if mounted(m) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				return fmt.Errorf("vm/local: unmount %s: %w", m, err)
			}
		}
	}
	os.RemoveAll(run)
	// Never remove through a mount that is still there (the image).
	if left := mountsUnder(d.dir(id)); len(left) > 0 {
		return fmt.Errorf("vm/local: %s still has mounts (%s): unmount them, then delete the server again", id, strings.Join(left, ", "))
	}
	// runc removes the server's cgroups but not their common parent; an
	// empty one goes too (a busy one refuses, which is right).
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/hac-servers")
	for _, p := range append(parents, "/sys/fs/cgroup/hac-servers") {
		os.Remove(p)
	}
	return os.RemoveAll(d.dir(id))
}

// Status says whether a server runs.
func (d *Driver) Status(ctx context.Context, id string) (vm.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusLocked(ctx, id)
}

func (d *Driver) statusLocked(ctx context.Context, id string) (vm.State, error) {
	out, err := d.runc(ctx, "state", containerID(id))
	if err == nil {
		var st struct{ Status string }
		if json.Unmarshal(out, &st) == nil && st.Status == "running" {
			return vm.Running, nil
		}
	}
	if _, err := os.Stat(filepath.Join(d.bundle(id), "config.json")); err == nil {
		return vm.Stopped, nil
	}
	return vm.Missing, nil
}

// List returns the servers the driver has on disk.
func (d *Driver) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.cfg.DataDir, "servers"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids, err
}
