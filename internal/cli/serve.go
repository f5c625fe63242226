package cli

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hac-project/hac/internal/agent"
	"github.com/hac-project/hac/internal/controlplane"
	"github.com/hac-project/hac/internal/gpu"
	"github.com/hac-project/hac/internal/meter"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
	"github.com/hac-project/hac/internal/vm"
	"github.com/hac-project/hac/internal/vm/local"
)

func defaultDataDir(getenv func(string) string, sub string) string {
	if os.Geteuid() == 0 && sub == "" {
		return "/var/lib/hac"
	}
	base := getenv("XDG_DATA_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "hac", sub)
}

func (a *app) serveCmd() *cobra.Command {
	cfg := controlplane.DefaultConfig()
	var dev, fastCommit bool
	var gpus, agentListen, dataDir, servers, publicPorts, currency, zone string
	netCfg := local.DefaultConfig("")
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the control plane (--dev: everything on this machine)",
		Args:  cobra.NoArgs,
		Long: `Run the control plane: the API, the scheduler and the leases.

With --dev it also runs a node agent in the same process (this machine's
NVIDIA GPUs, or 8 simulated 80 GiB GPUs), makes an admin user and a server
named "dev", and writes the client config, so that hac run works at once.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.DataDir = dataDir
			if cfg.DataDir == "" {
				sub := ""
				if dev {
					sub = "dev"
				}
				cfg.DataDir = defaultDataDir(a.getenv, sub)
			}
			if fastCommit {
				cfg.Durability = store.Normal
			}
			if zone != "" {
				loc, err := time.LoadLocation(zone)
				if err != nil {
					return usageError{fmt.Errorf("--display-zone %q: not a time zone this machine knows (give an IANA name such as Asia/Seoul): %w", zone, err)}
				}
				cfg.DisplayZone = loc
			}
			if currency != "" {
				cur, err := meter.LookupCurrency(currency)
				if err != nil {
					return usageError{fmt.Errorf("--currency: %w", err)}
				}
				cfg.Currency = cur
			}
			cfg.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			if _, err := fmt.Sscanf(publicPorts, "%d-%d", &cfg.PublicPorts[0], &cfg.PublicPorts[1]); err != nil {
				return usageError{fmt.Errorf("--public-ports %q: want LOW-HIGH such as 10000-19999", publicPorts)}
			}
			switch servers {
			case "none":
			case "local":
				netCfg.DataDir = filepath.Join(cfg.DataDir, "vm")
				drv, err := local.New(netCfg)
				if err != nil {
					return err
				}
				if err := drv.ApplyRules(cmd.Context(), vm.Rules{}); err != nil {
					return err // also makes the bridge, which the listeners need
				}
				cfg.Servers = drv
				if dev && !cmd.Flags().Changed("agent-listen") {
					agentListen = net.JoinHostPort(drv.Gateway(), "7471")
				}
			default:
				return usageError{fmt.Errorf("--servers %q: use none or local", servers)}
			}
			return a.serve(cmd.Context(), cfg, dev, gpus, agentListen)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "API address host:port (port 0 picks a free one)")
	f.StringVar(&dataDir, "data-dir", "", "database and credentials folder (default /var/lib/hac for root, else ~/.local/share/hac; --dev: .../hac/dev)")
	f.BoolVar(&dev, "dev", false, "run everything on this machine: control plane, an agent, a default user and server")
	f.StringVar(&gpus, "gpus", "auto", "--dev: the embedded agent's GPUs: auto, nvidia-smi or fake:COUNTxSIZE (fake:8x80GiB)")
	f.StringVar(&agentListen, "agent-listen", "127.0.0.1:7471", "--dev: the embedded agent's worker address")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "how long a job lives after its client stops renewing the lease")
	f.DurationVar(&cfg.SuspendedLease, "suspended-lease", cfg.SuspendedLease, "how long a job lives while its client is suspended (Ctrl+Z); its GPUs stay held")
	f.DurationVar(&cfg.NodeLostAfter, "node-lost-after", cfg.NodeLostAfter, "how long a silent node keeps its jobs")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat", cfg.HeartbeatInterval, "agent heartbeat interval")
	f.BoolVar(&fastCommit, "fast-commit", false, "sync the database at checkpoints only (a power loss may drop the last seconds)")
	f.StringVar(&servers, "servers", "none", "server driver: none, or local (runc containers with SSH on this machine; needs root)")
	f.StringVar(&netCfg.Bridge, "server-bridge", netCfg.Bridge, "--servers local: the bridge servers attach to")
	f.StringVar(&netCfg.Subnet, "server-subnet", netCfg.Subnet, "--servers local: the servers' private network; its first address is the gateway")
	f.StringVar(&netCfg.PublicAddress, "public-address", netCfg.PublicAddress, "the address port forwards listen on")
	f.StringVar(&netCfg.Table, "server-table", netCfg.Table, "--servers local: the nftables table (family ip) hac owns for forwards and firewall")
	f.StringVar(&netCfg.ImageCache, "image-cache", "", "--servers local: a folder that keeps the downloaded debian-12 base for the next build on this machine")
	f.StringVar(&zone, "display-zone", "", "the time zone (IANA name, such as Asia/Seoul) hac usage and hac price list show times in; the meter keeps UTC (default UTC)")
	f.StringVar(&currency, "currency", "", "what prices and charges are counted in, chosen once at the first start: USD (the default), EUR, GBP, KRW, JPY, CNY or INR")
	f.StringVar(&publicPorts, "public-ports", "10000-19999", "the range of public ports forwards may use")
	f.IntVar(&cfg.Quotas.WaitingJobs, "max-waiting-jobs", cfg.Quotas.WaitingJobs, "runs one user may have waiting at once (0: no bound)")
	f.IntVar(&cfg.Quotas.Servers, "max-servers", cfg.Quotas.Servers, "servers one user may have (0: no bound)")
	f.IntVar(&cfg.Quotas.PortForwards, "max-port-forwards", cfg.Quotas.PortForwards, "port forwards one user may have (0: no bound)")
	f.IntVar(&cfg.ConnLimits.Conns, "max-connections", cfg.ConnLimits.Conns, "open API connections in all; more are closed at once")
	f.IntVar(&cfg.ConnLimits.PerPeer, "max-connections-per-peer", cfg.ConnLimits.PerPeer, "open API connections from one address")
	f.StringSliceVar(&cfg.TLS.Names, "tls-name", nil, "more DNS names or addresses the API's certificate carries (clients dial the API by them)")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "the API's certificate (PEM, with its chain) instead of one from hac's own CA")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "the key of --tls-cert (PEM)")
	f.StringVar(&cfg.TLS.CAFile, "tls-ca", "", "the CA clients pin for --tls-cert (default: the chain's last certificate)")
	return cmd
}

func (a *app) serve(ctx context.Context, cfg controlplane.Config, dev bool, gpus, agentListen string) error {
	var provider gpu.Provider
	if dev {
		var err error
		if provider, err = gpu.Parse(gpus, "dev"); err != nil {
			return usageError{err}
		}
	}
	srv, err := controlplane.New(ctx, cfg)
	if err != nil {
		return err
	}
	// The address file lets scripts and tests find a port-0 listener.
	publish(filepath.Join(cfg.DataDir, "serve.addr"), srv.Addr())
	admin := "admin"
	if dev {
		admin = "dev"
	}
	creds, err := srv.Bootstrap(ctx, admin)
	if err != nil {
		return err
	}
	addr, pin := srv.URL(), srv.Pin()
	// Scripts and tests find the pin beside the address.
	publish(filepath.Join(cfg.DataDir, "serve.pin"), pin)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- srv.Run(ctx) }()
	if !dev {
		fmt.Fprintf(a.stderr, "hac control plane listening on %s\n", addr)
		fmt.Fprintf(a.stderr, "Its CA pin (clients' ca_pin, HAC_CA_PIN): %s\n", pin)
		fmt.Fprintf(a.stderr, "The admin token is in %s\n", srv.CredentialsPath())
		fmt.Fprintf(a.stderr, "Enroll a GPU node:  hac node add NAME > NAME.join, then on the node:  hac agent --server %s --join-file NAME.join\n", addr)
		return <-errc
	}
	if _, err := srv.EnsureServer(ctx, creds.AdminUser, "dev"); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(agentListen); err != nil {
		return usageError{fmt.Errorf("--agent-listen %q: want host:port", agentListen)}
	}
	noSandbox := os.Geteuid() != 0
	if noSandbox {
		cfg.Logger.Warn("not root: jobs run as this user with no sandbox (start hac serve --dev as root to isolate them)")
	}
	// The embedded node gets a fresh credential each start, and a name of
	// its own, so that two dev instances never touch each other's jobs.
	node := devNodeName(cfg.DataDir)
	nodeToken, err := srv.EnrollNode(ctx, node, "")
	if err != nil {
		return err
	}
	ag, err := agent.New(agent.Config{ControlPlane: addr, CAPin: pin, Token: nodeToken, Name: node, Listen: agentListen,
		GPUs: provider, DataDir: filepath.Join(cfg.DataDir, "agent"), Logger: cfg.Logger, SyncInterval: 30 * time.Second,
		NoSandbox: noSandbox, CacheBytes: agent.DefaultCacheBytes})
	if err != nil {
		return err
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	err = ag.Register(rctx)
	rcancel()
	if err != nil {
		return err
	}
	go func() { errc <- ag.Run(ctx) }()
	conf := Config{Addr: addr, CAPin: pin, Token: creds.AdminToken, Server: "dev"}
	path := UserConfigPath(a.getenv)
	if err := writeUserConfig(path, conf); err != nil {
		return fmt.Errorf("write client config %s: %w", path, err)
	}
	devs, _ := provider.Devices(ctx)
	fmt.Fprintf(a.stdout, `hac is running on this machine (dev mode).
  control plane  %s   (data in %s)
  GPU node       %s at %s with %s
  user "dev" with server "dev" (model %s)

Client config written to %s. In another terminal, try:
  hac smi
  %s

From another account or machine, set:
  export HAC_ADDR=%s
  export HAC_CA_PIN=%s
  export HAC_TOKEN=%s
  export HAC_SERVER=dev

Stop with Ctrl+C.
`, addr, cfg.DataDir, node, ag.Addr(), describeGPUs(devs), cfg.DefaultModel, path, sampleCommand(ctx), addr, pin, creds.AdminToken)
	return <-errc
}

// sampleCommand is the banner's suggestion of a first run: the sample
// with a python3 of this machine (the dev node's) that has torch, or a
// program that needs nothing.
func sampleCommand(ctx context.Context) string {
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// Finds torch without importing it (an import takes seconds).
		err = exec.CommandContext(cctx, path, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)").Run()
		cancel()
		if err == nil {
			return "cd examples/sample && hac run -- " + path + " train.py   (from hac's source folder)"
		}
	}
	return `hac run -- sh -c 'echo hello from the GPU node; nproc'   (no python3 here has torch, which the sample in examples/sample needs)`
}

func describeGPUs(devs []gpu.Device) string {
	if len(devs) == 0 {
		return "no GPUs"
	}
	return fmt.Sprintf("%d x %s (%d MiB)", len(devs), devs[0].Name, devs[0].MemoryMiB)
}

// devNodeName names the embedded node of a dev instance after its data
// folder: dev-node-1a2b3c.
func devNodeName(dataDir string) string {
	abs, _ := filepath.Abs(dataDir)
	sum := sha256.Sum256([]byte(abs))
	return fmt.Sprintf("dev-node-%x", sum[:3])
}

// joinTokenIn finds a join token in a file's text (hac node add's output
// or the bare token).
func joinTokenIn(text string) string {
	for _, f := range strings.Fields(text) {
		if strings.HasPrefix(f, token.JoinPrefix) {
			return f
		}
	}
	return strings.TrimSpace(text)
}

func (a *app) agentCmd() *cobra.Command {
	cfg := agent.Config{}
	var gpus, join, joinFile string
	cmd := &cobra.Command{
		Use:   "agent --server URL [--join-file FILE]",
		Short: "Run a GPU node agent that joins the pool",
		Long: `Run a GPU node agent. A node joins once, with the one-time token that an
admin's hac node add NAME prints: from a file (--join-file), the environment
(HAC_JOIN_TOKEN), or --join. The agent trades it for a credential of its
own, kept in its data folder (0600), and uses that from then on.

Jobs run in sandboxes (their own uid, namespaces and cgroup), which needs
root; --no-sandbox is only for a machine whose only user is you.`,
		Example: `  hac node add gpu1 > gpu1.join            # on the control plane, as admin
  hac agent --server https://10.0.0.1:7470 --join-file gpu1.join
  hac agent --server https://10.0.0.1:7470   # later starts: the kept credential`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ControlPlane == "" {
				return usageError{fmt.Errorf("--server URL is required")}
			}
			if joinFile != "" {
				raw, err := os.ReadFile(joinFile)
				if err != nil {
					return usageError{fmt.Errorf("--join-file: %w", err)}
				}
				join = joinTokenIn(string(raw))
			}
			if join == "" {
				join = a.getenv("HAC_JOIN_TOKEN")
			}
			if cfg.CAPin == "" {
				cfg.CAPin = a.getenv("HAC_CA_PIN")
			}
			if cfg.DataDir == "" {
				cfg.DataDir = defaultDataDir(a.getenv, "agent")
			}
			cfg.Logger = slog.New(slog.NewTextHandler(a.stderr, nil))
			var err error
			if cfg, err = agent.Enroll(cmd.Context(), cfg, join); err != nil {
				return err
			}
			p, err := gpu.Parse(gpus, cfg.Name)
			if err != nil {
				return usageError{err}
			}
			cfg.GPUs = p
			ag, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return ag.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ControlPlane, "server", "", "control plane URL, such as https://10.0.0.1:7470")
	f.StringVar(&cfg.CAPin, "ca-pin", "", "the control plane's CA pin (default: the join token's, then the kept credential's; or HAC_CA_PIN)")
	f.StringVar(&joinFile, "join-file", "", "file with the join token of hac node add (first start only)")
	f.StringVar(&join, "join", "", "the join token of hac node add (first start only; prefer --join-file or HAC_JOIN_TOKEN)")
	f.StringVar(&cfg.Name, "name", "", "node name (default: the one the join token was made for)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:7471", "worker address clients connect to")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port clients dial (default: --listen)")
	f.StringVar(&gpus, "gpus", "auto", "GPUs: auto (nvidia-smi, else 8 simulated), nvidia-smi, or fake:COUNTxSIZE such as fake:8x80GiB")
	f.StringVar(&cfg.DataDir, "data-dir", "", "blob cache and job folders")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", 30*time.Second, "how often a running program's changed files go back to its client (0: at the end only)")
	f.DurationVar(&cfg.MemoryInterval, "memory-interval", time.Second, "how often the memory watchdog measures each job's GPU memory")
	f.Var(uidRangeFlag{&cfg.JobUIDs}, "job-uids", "uids jobs run as, FIRST-LAST, one per running job (default 3000000-3099999)")
	cfg.CacheBytes = agent.DefaultCacheBytes
	f.Var(sizeFlag{&cfg.CacheBytes}, "cache-size", "bound on the workspace blob cache, and again on the workspace trees and servers' layers made from it; what was used longest ago goes first (default 50GiB)")
	f.Var(sizeFlag{&cfg.JobMemoryBytes}, "job-memory", "memory limit of each job, such as 64GiB (default: the node's memory shared out by GPUs)")
	f.Int64Var(&cfg.JobPids, "job-pids", agent.DefaultJobPids, "limit on each job's processes and threads")
	f.BoolVar(&cfg.NoSandbox, "no-sandbox", false, "run jobs as the agent's user without a sandbox (only on a machine whose only user is you)")
	cfg.JobOutputBytes, cfg.RunOutputBytes, cfg.JobRetention = agent.DefaultJobOutputBytes, agent.DefaultRunOutputBytes, agent.DefaultJobRetention
	f.Var(sizeFlag{&cfg.JobOutputBytes}, "job-output", "how much of each detached job's output the node keeps: its last part (default 64MiB)")
	f.Var(sizeFlag{&cfg.RunOutputBytes}, "run-output", "how much of each attached run's output the node keeps: its last part, in memory while it runs (default 1MiB)")
	f.DurationVar(&cfg.JobRetention, "job-retention", agent.DefaultJobRetention, "how long a detached job's output and files stay after it ended")
	cfg.JobKeepBytes = agent.DefaultJobKeepBytes
	f.Var(sizeFlag{&cfg.JobKeepBytes}, "job-keep-size", "bound on what the node keeps of ended jobs; past it the oldest records of the user who holds the most go first (default 20GiB)")
	return cmd
}

// publish writes a file that others poll for (serve.addr, serve.pin)
// whole or not at all: a reader never sees it empty.
func publish(path, content string) {
	tmp := path + ".new"
	if os.WriteFile(tmp, []byte(content), 0o600) == nil {
		os.Rename(tmp, path)
	}
}
