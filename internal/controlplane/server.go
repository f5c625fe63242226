package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hac-project/hac/internal/guard"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// Server is a running control plane.
type Server struct {
	cfg    Config
	store  *store.Store
	broker *broker
	ln     net.Listener
	// serverLn is where servers reach the API: on the server driver's
	// gateway, when there is a driver.
	serverLn net.Listener
	http     *http.Server
	tls      *tlsState
	portal   portal
	obs      *observer
	// What requests read of tokens, users and servers.
	tokens  accountsCache[cachedToken]
	servers accountsCache[store.Server]
}

// New opens the store, loads the state and binds the listener; Run serves.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: data dir: %w", err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "hac.db"), cfg.Durability)
	if err != nil {
		return nil, err
	}
	if cfg.Currency, err = settleCurrency(ctx, st, cfg.Currency); err != nil {
		st.Close()
		return nil, err
	}
	obs := newObserver()
	st.ObserveCommits(obs.commit)
	st.ObserveMeter(obs.meter(cfg.Currency))
	b, err := newBroker(ctx, cfg, st, obs)
	if err != nil {
		st.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("controlplane: listen on %s: %w (is another hac serve running? choose another --listen)", cfg.Listen, err)
	}
	s := &Server{cfg: cfg, store: st, broker: b, ln: ln, obs: obs}
	if cfg.Servers != nil {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		s.serverLn, err = net.Listen("tcp", net.JoinHostPort(cfg.Servers.Gateway(), port))
		if err != nil {
			ln.Close()
			st.Close()
			return nil, fmt.Errorf("controlplane: listen for servers on the gateway %s: %w", cfg.Servers.Gateway(), err)
		}
	}
	listeners := []net.Listener{s.ln}
	if s.serverLn != nil {
		listeners = append(listeners, s.serverLn)
	}
	if s.tls, err = newTLS(cfg.TLS, cfg.DataDir, listeners); err != nil {
		for _, ln := range listeners {
			ln.Close()
		}
		st.Close()
		return nil, err
	}
	s.ln = guard.Listen(s.ln, cfg.ConnLimits)
	if s.serverLn != nil {
		s.serverLn = guard.Listen(s.serverLn, cfg.ConnLimits)
	}
	s.http = guard.Server(s.handler())
	s.http.TLSConfig = s.tls.serverConfig()
	return s, nil
}

// URL is the API's URL.
func (s *Server) URL() string { return "https://" + s.Addr() }

// ServerURL is the API's URL as servers made by the driver reach it.
func (s *Server) ServerURL() string {
	if s.serverLn == nil {
		return s.URL()
	}
	return "https://" + s.serverLn.Addr().String()
}

// Addr returns the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Pin is the pin of the CA that clients and agents trust for the API
// (pki.ClientConfig).
func (s *Server) Pin() string { return s.tls.apiPin }

// compressMinBytes is the smallest API message sent gzipped.
const compressMinBytes = 4096

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	// Every API call is authenticated before its body is read (see
	// authenticateFirst), and no message may be larger than MaxMessageBytes,
	// compressed or not.
	// Small messages go uncompressed: gzip's set-up costs more than the
	// bytes it saves (decision 0005).
	limit := connect.WithHandlerOptions(connect.WithReadMaxBytes(guard.MaxMessageBytes), connect.WithCompressMinBytes(compressMinBytes),
		connect.WithInterceptors(s.obs.interceptor()))
	users := connect.WithHandlerOptions(limit, connect.WithInterceptors(authInterceptor{kinds: []store.TokenKind{store.UserToken}}))
	anyClient := connect.WithHandlerOptions(limit, connect.WithInterceptors(authInterceptor{kinds: []store.TokenKind{store.UserToken, store.ServerToken}}))
	nodes := connect.WithHandlerOptions(limit, connect.WithInterceptors(authInterceptor{kinds: []store.TokenKind{store.NodeToken, store.JoinToken}}))
	api := func(path string, h http.Handler) { mux.Handle(path, s.authenticateFirst(h)) }
	api(hacv1connect.NewAcceleratorServiceHandler(acceleratorService{s}, anyClient))
	// A server token lists its own server's jobs (SPEC A11).
	serverJobs := connect.WithHandlerOptions(limit, connect.WithInterceptors(authInterceptor{kinds: []store.TokenKind{store.UserToken},
		also: map[string][]store.TokenKind{hacv1connect.PoolServiceListJobsProcedure: {store.ServerToken}, hacv1connect.PoolServiceListQueueProcedure: {store.ServerToken}}}))
	api(hacv1connect.NewPoolServiceHandler(poolService{s}, serverJobs))
	api(hacv1connect.NewServerServiceHandler(poolService{s}, users))
	api(hacv1connect.NewKeyPairServiceHandler(keyPairService{s}, users))
	api(hacv1connect.NewPortalServiceHandler(portalService{s}, users))
	api(hacv1connect.NewUserServiceHandler(userService{s}, users))
	api(hacv1connect.NewBillingServiceHandler(billingService{s}, users))
	api(hacv1connect.NewCatalogServiceHandler(catalogService{}, anyClient))
	api(hacv1connect.NewAgentServiceHandler(agentService{s}, nodes))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.store.View(r.Context(), func(*store.Tx) error { return nil }); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// The control plane's own figures (every procedure's latency and
	// result, the process) tell one tenant about the others: operators
	// only, as a Prometheus scrape with an admin's bearer token.
	mux.Handle("GET /metrics", s.adminOnly(promhttp.HandlerFor(s.metrics(), promhttp.HandlerOpts{})))
	s.profiles(mux)
	return mux
}

func (s *Server) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	s.obs.register(reg)
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("hac_queue_length", "Jobs waiting for the pool or their accelerator.", func() float64 { return float64(s.broker.waitingCount()) })
	gauge("hac_nodes_ready", "Nodes that are ready.", func() float64 {
		nodes, _, _ := s.broker.nodesView()
		n := 0
		for _, nd := range nodes {
			if !nd.lost {
				n++
			}
		}
		return float64(n)
	})
	gauge("hac_gpu_memory_allocated_mib", "GPU memory held by running jobs.", func() float64 {
		_, held, _ := s.broker.nodesView()
		var sum int64
		for _, h := range held {
			sum += h
		}
		return float64(sum)
	})
	return reg
}

// Run reconciles the servers, then serves until ctx ends, then shuts down
// gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.reconcileServers(ctx); err != nil {
		s.cfg.Logger.Error("reconcile servers", "err", err)
	}
	go s.reap(ctx)
	errc := make(chan error, 2)
	go func() { errc <- s.http.ServeTLS(s.ln, "", "") }()
	if s.serverLn != nil {
		go func() { errc <- s.http.ServeTLS(s.serverLn, "", "") }()
	}
	select {
	case err := <-errc:
		s.store.Close()
		return err
	case <-ctx.Done():
	}
	if s.cfg.Servers != nil {
		s.cfg.Servers.Close()
	}
	s.portal.work.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.http.Close()
	}
	<-errc
	if s.serverLn != nil {
		<-errc
	}
	s.store.Close()
	return err
}

// reap expires leases and nodes once a second until ctx ends.
func (s *Server) reap(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.broker.expire()
		}
	}
}

// Credentials are the tokens made on a control plane's first start, kept
// in DATA_DIR/credentials.json (mode 0600) for the operator.
type Credentials struct {
	AdminUser  string `json:"admin_user"`
	AdminToken string `json:"admin_token"`
}

// CredentialsPath is where Bootstrap keeps the first-run credentials.
func (s *Server) CredentialsPath() string { return filepath.Join(s.cfg.DataDir, "credentials.json") }

// Bootstrap returns the first-run credentials, making the admin user on
// the very first start. Nodes are enrolled one by one (hac node add).
func (s *Server) Bootstrap(ctx context.Context, adminName string) (Credentials, error) {
	var c Credentials
	raw, err := os.ReadFile(s.CredentialsPath())
	if err == nil {
		if err := json.Unmarshal(raw, &c); err != nil {
			return c, fmt.Errorf("controlplane: %s is damaged (%v): restore it or start with an empty --data-dir", s.CredentialsPath(), err)
		}
		return c, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return c, err
	}
	c = Credentials{AdminUser: adminName, AdminToken: token.New(token.UserPrefix)}
	now := s.cfg.Now()
	err = s.store.Update(ctx, func(tx *store.Tx) error {
		id, err := tx.CreateUser(adminName, true, now)
		if err != nil {
			return err
		}
		return tx.AddToken(token.Hash(c.AdminToken), store.Token{Kind: store.UserToken, UserID: id}, now)
	})
	if err != nil {
		return c, fmt.Errorf("controlplane: bootstrap: %w", err)
	}
	raw, _ = json.MarshalIndent(c, "", "  ")
	if err := os.WriteFile(s.CredentialsPath(), raw, 0o600); err != nil {
		return c, err
	}
	return c, nil
}

// EnsureServer returns the token of the admin's server named name, making
// the server on first use (hac serve --dev). The token is kept beside the
// credentials so that restarts reuse it.
func (s *Server) EnsureServer(ctx context.Context, adminName, name string) (string, error) {
	path := filepath.Join(s.cfg.DataDir, "server-"+name+".token")
	if raw, err := os.ReadFile(path); err == nil {
		return string(raw), nil
	}
	var u store.User
	err := s.store.View(ctx, func(tx *store.Tx) error {
		var err error
		u, err = tx.UserByName(adminName)
		return err
	})
	if err != nil {
		return "", err
	}
	_, tok, err := s.createServer(ctx, u, name, s.cfg.DefaultModel, "")
	if err != nil {
		return "", err
	}
	return tok, os.WriteFile(path, []byte(tok), 0o600)
}
