package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/gpu"
	"github.com/hac-project/hac/internal/guard"
	"github.com/hac-project/hac/internal/pki"
	"github.com/hac-project/hac/internal/runner"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/workspace"
	"golang.org/x/sys/unix"
)

// Config configures an agent.
type Config struct {
	// ControlPlane is the control plane's URL, such as https://10.0.0.1:7470.
	ControlPlane string
	// CAPin names the CA the control plane's certificate is from
	// (pki.ClientConfig); Enroll fills it.
	CAPin string
	// Token is the node's own credential (see Enroll).
	Token string
	// Name is the node's name in the pool; the hostname by default.
	Name string
	// Listen is the worker API address; port 0 picks a free one.
	Listen string
	// Advertise is the host:port clients dial; Listen's when empty.
	Advertise string
	GPUs      gpu.Provider
	// DataDir holds the blob cache and the job folders.
	DataDir string
	// CacheBytes bounds the blob cache (least recently used blobs go
	// first); 0 means no bound. DefaultCacheBytes is what hac agent uses.
	CacheBytes int64
	// SyncInterval is how often a running program's changed files go back
	// to its client; 0 sends them at the end only.
	SyncInterval time.Duration
	// MemoryInterval is how often the memory watchdog looks at the GPUs;
	// 0 means every second.
	MemoryInterval time.Duration
	// CgroupRoot is the cgroup v2 folder for job cgroups;
	// runner.CgroupV2Root() by default.
	CgroupRoot string
	// JobUIDs are the uids jobs run as, one per running job;
	// DefaultJobUIDs when empty.
	JobUIDs UIDRange
	// JobMemoryBytes is each job's memory limit; 0 shares the node's
	// memory out by GPUs.
	JobMemoryBytes int64
	// JobPids bounds each job's processes and threads; DefaultJobPids
	// when 0.
	JobPids int64
	// NoSandbox runs jobs as the agent's own user with no sandbox: only
	// for a machine with one trusted user (hac serve --dev without root).
	NoSandbox bool
	// JobOutputBytes bounds the output kept of each detached job (its last
	// part); DefaultJobOutputBytes when 0.
	JobOutputBytes int64
	// RunOutputBytes bounds the output kept of each attached run (its
	// last part, in memory while it runs); DefaultRunOutputBytes when 0.
	RunOutputBytes int64
	// JobRetention is how long a detached job's output and files stay
	// after its end; DefaultJobRetention when 0.
	JobRetention time.Duration
	// JobKeepBytes bounds what the node keeps of ended detached jobs (the
	// oldest go first); DefaultJobKeepBytes when 0.
	JobKeepBytes int64
	Logger       *slog.Logger
	// HTTPClient talks to the control plane; apiclient.New(CAPin) by
	// default.
	HTTPClient *http.Client
}

// Agent is a running node agent.
type Agent struct {
	cfg    Config
	client hacv1connect.AgentServiceClient
	cache  *workspace.Cache
	trees  *workspace.Trees // sandboxed jobs' workspaces, made from cache; nil: copies
	// images and layers make jobs' roots from their servers' images and
	// changes (SPEC A7).
	images *images
	layers *layerStore
	ln     net.Listener
	// launcher starts jobs, with a sandbox init kept ready.
	launcher *runner.Launcher
	// releases are ended jobs whose cgroups and folders are being removed.
	releases sync.WaitGroup
	memTotal int64 // the node's memory, bytes
	log      *slog.Logger
	// cert is the worker service's certificate, issued by the control
	// plane for the request csr of the key certKey.
	cert    atomic.Pointer[tls.Certificate]
	certKey *ecdsa.PrivateKey
	csr     []byte

	mu       sync.Mutex
	devs     []gpu.Device // as registered
	nodes    gpuNodes     // their device nodes
	uids     map[int]bool // job uids in use
	nextUID  int
	key      []byte
	interval time.Duration
	jobs     map[int64]*jobRun
	used     map[int64]time.Time // job ids whose ticket was used, until expiry
	kept     map[int64]*keptJob  // detached jobs' output and files
}

// New checks the configuration, binds the worker listener, opens the
// cache and kills what an earlier agent left; Run registers and serves.
func New(cfg Config) (*Agent, error) {
	if cfg.ControlPlane == "" {
		return nil, errors.New("agent: --server URL is required")
	}
	if cfg.Token == "" {
		return nil, ErrNotEnrolled
	}
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: no --name and no hostname: %w", err)
		}
		cfg.Name = h
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		if err := checkURL(cfg.ControlPlane); err != nil {
			return nil, err
		}
		cfg.HTTPClient = apiclient.New(cfg.CAPin)
	}
	if cfg.GPUs == nil {
		return nil, errors.New("agent: no GPU provider")
	}
	if !cfg.NoSandbox && os.Geteuid() != 0 {
		return nil, errors.New("agent: jobs run in sandboxes (own uid, namespaces, cgroups), which needs root: start hac agent as root, or pass --no-sandbox on a machine whose only user is you")
	}
	if cfg.JobUIDs.Count == 0 {
		cfg.JobUIDs = DefaultJobUIDs
	}
	if cfg.JobPids == 0 {
		cfg.JobPids = DefaultJobPids
	}
	if cfg.JobOutputBytes <= 0 {
		cfg.JobOutputBytes = DefaultJobOutputBytes
	}
	if cfg.RunOutputBytes <= 0 {
		cfg.RunOutputBytes = DefaultRunOutputBytes
	}
	if cfg.JobRetention <= 0 {
		cfg.JobRetention = DefaultJobRetention
	}
	if cfg.JobKeepBytes <= 0 {
		cfg.JobKeepBytes = DefaultJobKeepBytes
	}
	if root := runner.CgroupV2Root(); cfg.CgroupRoot == "" && root != "" {
		cfg.CgroupRoot = filepath.Join(root, cfg.Name)
	}
	// Nothing of the agent's is anyone else's business.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: data folder: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: data folder: %w", err)
	}
	cache, err := workspace.NewCache(filepath.Join(cfg.DataDir, "blobs"), cfg.CacheBytes)
	if err != nil {
		return nil, err
	}
	// Job folders an earlier agent left are gone with their jobs.
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "jobs")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "jobs"), 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("agent: listen on %s: %w (choose another --listen)", cfg.Listen, err)
	}
	if cfg.Advertise == "" {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			ln.Close()
			return nil, fmt.Errorf("agent: listening on %s: give --advertise HOST:PORT, the address clients dial", cfg.Listen)
		}
		cfg.Advertise = ln.Addr().String()
	}
	a := &Agent{cfg: cfg, memTotal: memTotal(), cache: cache, ln: guard.Listen(ln, guard.DefaultLimits), log: cfg.Logger, jobs: map[int64]*jobRun{}, used: map[int64]time.Time{}, uids: map[int]bool{}, kept: map[int64]*keptJob{}}
	if err := a.loadKept(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("agent: detached jobs' records: %w", err)
	}
	if a.certKey, a.csr, err = pki.NewRequest(); err != nil {
		ln.Close()
		return nil, err
	}
	if err := a.sweep(); err != nil {
		ln.Close()
		return nil, err
	}
	a.client = hacv1connect.NewAgentServiceClient(cfg.HTTPClient, cfg.ControlPlane,
		connect.WithInterceptors(apiclient.Bearer(cfg.Token)))
	// Images come uncompressed: gzip would cost more than the link saves.
	imageClient := hacv1connect.NewAgentServiceClient(cfg.HTTPClient, cfg.ControlPlane,
		connect.WithInterceptors(apiclient.Bearer(cfg.Token)), connect.WithAcceptCompression("gzip", nil, nil))
	if a.images, err = newImages(filepath.Join(cfg.DataDir, "images"), imageClient, a.log.Info); err != nil {
		ln.Close()
		return nil, err
	}
	// Servers' layers get as much room as the cache their blobs come from.
	if a.layers, err = newLayerStore(filepath.Join(cfg.DataDir, "layers"), cache, cfg.CacheBytes); err != nil {
		ln.Close()
		return nil, err
	}
	// So do the workspaces' trees that idle jobs left, where overlays
	// with idmapped layers work; elsewhere each job gets a copy.
	if fs, ok := overlayUpperFS(cfg.DataDir); !ok {
		a.log.Warn("the data folder's file system takes no idmapped overlay: every sandboxed job gets a copy of its workspace (slower), and jobs on their servers' images (hac server create, --image) cannot start; use ext4, XFS, Btrfs or tmpfs for --data-dir", "file_system", fs)
	} else if a.trees, err = workspace.NewTrees(filepath.Join(cfg.DataDir, "trees"), cache, cfg.CacheBytes); err != nil {
		ln.Close()
		return nil, err
	}
	return a, nil
}

// overlayUpperFS reports whether dir's file system is one a job's
// workspace overlay works on (its upper folder and an idmapped lower
// layer: not NFS, FUSE or an overlay itself, as in a container), and
// names it.
func overlayUpperFS(dir string) (string, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err.Error(), false
	}
	switch int64(st.Type) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4", true
	case unix.XFS_SUPER_MAGIC:
		return "xfs", true
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs", true
	case unix.TMPFS_MAGIC:
		return "tmpfs", true
	}
	return fmt.Sprintf("%#x", st.Type), false
}

// Addr is the worker API's advertised address.
func (a *Agent) Addr() string { return a.cfg.Advertise }

// Name is the node's name.
func (a *Agent) Name() string { return a.cfg.Name }

// register reports the node and its GPUs and keeps the ticket key.
func (a *Agent) register(ctx context.Context) error {
	devs, err := a.cfg.GPUs.Devices(ctx)
	if err != nil {
		return fmt.Errorf("agent: list GPUs: %w", err)
	}
	req := &hacv1.RegisterNodeRequest{ProtocolVersion: hacv1.AgentProtocolVersion, Name: a.cfg.Name, Address: a.cfg.Advertise, WorkerCsr: a.csr}
	for _, d := range devs {
		req.Gpus = append(req.Gpus, &hacv1.GPU{Index: int32(d.Index), Uuid: d.UUID, Name: d.Name, MemoryMib: d.MemoryMiB})
	}
	resp, err := a.client.RegisterNode(ctx, connect.NewRequest(req))
	if err != nil {
		return fmt.Errorf("agent: register with %s: %w", a.cfg.ControlPlane, err)
	}
	if err := a.setCert(resp.Msg.WorkerCertificate); err != nil {
		return err
	}
	nodes := findGPUNodes(devs)
	a.mu.Lock()
	a.devs, a.nodes = devs, nodes
	a.key = resp.Msg.TicketKey
	a.interval = time.Duration(resp.Msg.HeartbeatIntervalMs) * time.Millisecond
	stale := a.jobs
	a.jobs = map[int64]*jobRun{}
	a.mu.Unlock()
	for _, j := range stale {
		j.kill("the node re-registered with the control plane")
	}
	a.log.Info("node registered", "node", a.cfg.Name, "address", a.cfg.Advertise, "gpus", len(devs))
	return nil
}

// setCert takes the worker certificate chain the control plane issued.
func (a *Agent) setCert(chain [][]byte) error {
	if len(chain) == 0 {
		return errors.New("agent: the control plane issued no worker certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("agent: the worker certificate: %w", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(a.certKey.Public()) {
		return errors.New("agent: the worker certificate is not for this agent's key")
	}
	a.cert.Store(&tls.Certificate{Certificate: chain, PrivateKey: a.certKey, Leaf: leaf})
	return nil
}

// certDue reports whether the worker certificate has less than a third
// of its lifetime left.
func (a *Agent) certDue(now time.Time) bool {
	c := a.cert.Load()
	if c == nil {
		return false
	}
	return c.Leaf.NotAfter.Sub(now) < c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)/3
}

// DefaultCacheBytes is hac agent's bound on its blob cache.
const DefaultCacheBytes = 50 << 30

// maxWorkerMessage bounds one message of the worker API: the Start
// message carries the workspace's manifest (workspace.MaxFiles entries at
// most). A peer must show a valid ticket before any is read.
const maxWorkerMessage = 96 << 20

// TicketHeader carries the worker ticket, so that the agent checks it
// before it reads a message.
const TicketHeader = ticket.Header

// claimsKey carries a checked ticket's claims from ticketFirst to Exec.
type claimsKey struct{}

var errTicket = errors.New("the ticket for this node is invalid or expired: run the program again")

// ticketFirst refuses a worker call whose ticket header is not valid for
// this node before anything reads its body.
func (a *Agent) ticketFirst(next http.Handler) http.Handler {
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		key := a.key
		a.mu.Unlock()
		claims, err := ticket.Verify(key, r.Header.Get(TicketHeader), time.Now())
		if err != nil || claims.Node != a.cfg.Name {
			errs.Write(w, r, connect.NewError(connect.CodePermissionDenied, errTicket))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

// sweep kills what an earlier agent left, then keeps a sandbox ready for
// the next job.
func (a *Agent) sweep() error {
	if !a.cfg.NoSandbox {
		if err := runner.PrepareCgroups(a.cgroupRoot()); err != nil {
			return err
		}
		if err := runner.PrepareJobNetwork(); err != nil {
			return err
		}
	}
	if swept := runner.Sweep(a.cgroupRoot()); len(swept) > 0 {
		a.log.Warn("killed jobs left by an earlier agent", "cgroups", swept)
	}
	if a.cfg.NoSandbox {
		a.launcher = new(runner.Launcher)
	} else {
		a.launcher = runner.NewLauncher(a.cgroupRoot())
	}
	return nil
}

// devices returns the GPUs as last registered.
func (a *Agent) devices() []gpu.Device {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.devs
}

// Register registers the node once; Run does it too.
func (a *Agent) Register(ctx context.Context) error { return a.register(ctx) }

// Run registers (unless Register already did), serves the worker API and
// heartbeats until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	handOnIgnoredSignalsAsDefault()
	a.mu.Lock()
	registered := a.key != nil
	a.mu.Unlock()
	defer runner.RemoveRoot(a.cgroupRoot())
	defer a.waitReleases(10 * time.Second)
	defer a.launcher.Close()
	if !registered {
		if err := a.register(ctx); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	path, h := hacv1connect.NewWorkerServiceHandler(&worker{a: a}, append(outputCompression, connect.WithReadMaxBytes(maxWorkerMessage))...)
	mux.Handle(path, a.ticketFirst(h))
	srv := guard.Server(mux)
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return a.cert.Load(), nil }}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(a.ln, "", "") }()
	removed := make(chan error, 1)
	go a.heartbeat(ctx, removed)
	go a.watchMemory(ctx)
	select {
	case err := <-errc:
		return err
	case err := <-removed:
		a.killAll("this node was removed from the pool")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return err
	case <-ctx.Done():
	}
	a.killAll("the node agent is stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return nil
}

// outputCompression turns gzip off on the worker's streams (a program's
// output, its files, its workspace): on loopback and on a datacenter's
// links compressing costs more than it saves (BENCHMARKS.md (d)). A
// client that asks for gzip gets the bytes as they are; a request that
// comes gzipped is refused.
var outputCompression = []connect.HandlerOption{connect.WithCompression("gzip", nil, nil)}

// waitReleases waits, at most d, for ended jobs' cleanups (a process stuck
// in the kernel can hold one; the next agent's sweep removes what is left).
func (a *Agent) waitReleases(d time.Duration) {
	done := make(chan struct{})
	go func() { a.releases.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		a.log.Warn("job cleanups still running at exit; the next start sweeps them")
	}
}

// cgroupRoot is where job cgroups go, fixed in New (PrepareCgroups may
// move the agent into another cgroup afterwards).
func (a *Agent) cgroupRoot() string { return a.cfg.CgroupRoot }

// killAll ends every job on the node.
func (a *Agent) killAll(reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, j := range a.jobs {
		j.kill(reason)
	}
}

// heartbeat reports running jobs and stops the ones the control plane no
// longer grants, until ctx ends, or until the control plane no longer
// knows the node's credential (hac node remove), which it says on removed.
func (a *Agent) heartbeat(ctx context.Context, removed chan<- error) {
	for {
		a.mu.Lock()
		interval := a.interval
		req := &hacv1.HeartbeatRequest{Name: a.cfg.Name}
		if a.certDue(time.Now()) {
			req.WorkerCsr = a.csr
		}
		for id, j := range a.jobs {
			req.Jobs = append(req.Jobs, &hacv1.RunningJob{JobId: strconv.FormatInt(id, 10), Pid: int64(j.pid()), UsedMib: j.used(),
				SuspendedMs: j.suspendedFor().Milliseconds()})
		}
		for id, exp := range a.used {
			if time.Now().After(exp) {
				delete(a.used, id)
			}
		}
		a.mu.Unlock()
		a.expireKept(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		resp, err := a.client.Heartbeat(ctx, connect.NewRequest(req))
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			removed <- fmt.Errorf("agent: the control plane no longer accepts this node's credential (hac node remove?): its jobs were stopped; to rejoin, delete %s and enroll the node again with hac node add", credentialPath(a.cfg.DataDir))
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("heartbeat failed", "err", err)
			}
			continue
		}
		if len(resp.Msg.WorkerCertificate) > 0 {
			if err := a.setCert(resp.Msg.WorkerCertificate); err != nil {
				a.log.Warn("renew the worker certificate", "err", err)
			}
		}
		if resp.Msg.Reregister {
			if err := a.register(ctx); err != nil {
				a.log.Warn("re-register failed", "err", err)
			}
			continue
		}
		if !a.cfg.NoSandbox {
			for _, digest := range resp.Msg.Images {
				a.images.prefetch(digest)
			}
		}
		for _, raw := range resp.Msg.StopJobs {
			id, _ := strconv.ParseInt(raw, 10, 64)
			a.mu.Lock()
			j := a.jobs[id]
			a.mu.Unlock()
			if j != nil {
				j.kill("The HAC AI Accelerator was released by the server (lease expired or reset).")
			}
		}
		for _, t := range resp.Msg.Terminate {
			id, _ := strconv.ParseInt(t.JobId, 10, 64)
			a.mu.Lock()
			j := a.jobs[id]
			a.mu.Unlock()
			if j != nil {
				j.terminate(time.Duration(max(t.GraceSeconds, 0))*time.Second, t.Reason)
			}
		}
	}
}

// reportEnd tells the control plane a job's program ended, retrying for a
// while if it is unreachable (the lease expires anyway). Callers run it in
// its own goroutine, so that the client hears of the exit at once.
func (a *Agent) reportEnd(id int64, code int, reason string, fault bool) {
	req := &hacv1.JobEndedRequest{Name: a.cfg.Name, JobId: strconv.FormatInt(id, 10), ExitCode: int32(code), Reason: reason, InfrastructureFault: fault}
	for attempt := 0; attempt < 10; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := a.client.JobEnded(ctx, connect.NewRequest(req))
		cancel()
		if err == nil {
			return
		}
		a.log.Warn("report job end", "job", id, "err", err)
		time.Sleep(time.Second)
	}
}
