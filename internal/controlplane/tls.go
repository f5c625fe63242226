package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hac-project/hac/internal/pki"
)

// TLS (SPEC P8): every listener speaks TLS. The control plane's own CA
// (DATA_DIR/tls) signs the API's certificate, unless the operator gives
// one, and every node's worker certificate. Clients pin the CA of the
// API's certificate (apiPin), and grants carry the pin of the worker
// certificates' CA (workerPin).

// TLSConfig is how the API gets its certificate.
type TLSConfig struct {
	// Names are more DNS names or addresses the API's own certificate
	// carries, besides the listen address, the servers' gateway and
	// loopback (and, listening on every address, the host's addresses
	// and name).
	Names []string
	// CertFile and KeyFile, when set, are the operator's certificate
	// (PEM, with its chain) and key for the API; CAFile is the authority
	// clients pin, the chain's last certificate when empty.
	CertFile, KeyFile, CAFile string
}

const (
	apiCertLifetime    = 365 * 24 * time.Hour
	workerCertLifetime = 30 * 24 * time.Hour
)

// tlsState is the control plane's certificates.
type tlsState struct {
	ca        *pki.CA
	apiPin    string
	workerPin string
	names     []string

	mu  sync.Mutex
	api *tls.Certificate
}

func newTLS(cfg TLSConfig, dataDir string, listeners []net.Listener) (*tlsState, error) {
	ca, err := pki.LoadOrCreateCA(filepath.Join(dataDir, "tls"))
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	t := &tlsState{ca: ca, workerPin: ca.Pin(), apiPin: ca.Pin()}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		if len(cfg.Names) > 0 {
			return nil, errors.New("controlplane: --tls-name names hac's own certificate; with --tls-cert, the names are the certificate's")
		}
		cert, pin, err := operatorCert(cfg)
		if err != nil {
			return nil, err
		}
		// Clients dial the listeners' addresses (servers the gateway's).
		for _, ln := range listeners {
			host, _, _ := net.SplitHostPort(ln.Addr().String())
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				if err := cert.Leaf.VerifyHostname(host); err != nil {
					return nil, fmt.Errorf("controlplane: --tls-cert is not for %s, where the API listens (clients would refuse it): %w", host, err)
				}
			}
		}
		t.api, t.apiPin = &cert, pin
		return t, nil
	}
	for _, n := range cfg.Names {
		if pki.IsNodeName(n) {
			return nil, fmt.Errorf("controlplane: --tls-name %s: names ending in %s are the nodes'", n, pki.NodeSuffix)
		}
	}
	t.names = apiNames(cfg.Names, listeners)
	if _, err := t.apiCert(); err != nil {
		return nil, err
	}
	return t, nil
}

// operatorCert loads --tls-cert and --tls-key, and finds the pin.
func operatorCert(cfg TLSConfig) (tls.Certificate, string, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return tls.Certificate{}, "", errors.New("controlplane: give both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return cert, "", fmt.Errorf("controlplane: --tls-cert/--tls-key: %w", err)
	}
	last, err := x509.ParseCertificate(cert.Certificate[len(cert.Certificate)-1])
	if err != nil {
		return cert, "", fmt.Errorf("controlplane: --tls-cert: %w", err)
	}
	if cfg.CAFile != "" {
		raw, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return cert, "", fmt.Errorf("controlplane: --tls-ca: %w", err)
		}
		block, _ := pem.Decode(raw)
		if block == nil || block.Type != "CERTIFICATE" {
			return cert, "", fmt.Errorf("controlplane: --tls-ca %s: no PEM certificate in it", cfg.CAFile)
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return cert, "", fmt.Errorf("controlplane: --tls-ca: %w", err)
		}
		if !slices.ContainsFunc(cert.Certificate, func(der []byte) bool { return string(der) == string(ca.Raw) }) {
			cert.Certificate = append(cert.Certificate, ca.Raw) // pinned clients find it in the chain
		}
		last = ca
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool(last), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return cert, "", fmt.Errorf("controlplane: --tls-cert is not a server certificate of its CA: %w", err)
	}
	return cert, pki.PinOf(last), nil
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// apiNames are the names of the API's own certificate.
func apiNames(extra []string, listeners []net.Listener) []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	for _, ln := range listeners {
		host, _, _ := net.SplitHostPort(ln.Addr().String())
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			if h, err := os.Hostname(); err == nil {
				names = append(names, h)
			}
			addrs, _ := net.InterfaceAddrs()
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
					names = append(names, ipn.IP.String())
				}
			}
			continue
		}
		names = append(names, host)
	}
	names = append(names, extra...)
	slices.Sort(names)
	return slices.Compact(names)
}

// apiCert is the API's certificate, issued again when a third of its
// lifetime is left.
func (t *tlsState) apiCert() (*tls.Certificate, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.api != nil && (t.names == nil || time.Until(t.api.Leaf.NotAfter) > apiCertLifetime/3) {
		return t.api, nil
	}
	cert, err := t.ca.IssueServer(t.names, apiCertLifetime)
	if err != nil {
		return nil, fmt.Errorf("controlplane: issue the API's certificate: %w", err)
	}
	t.api = &cert
	return t.api, nil
}

// serverConfig is the API listeners' TLS configuration.
func (t *tlsState) serverConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return t.apiCert() }}
}

// workerCert issues node's worker certificate to the key of csr, and
// returns it with the key's pin.
func (t *tlsState) workerCert(node string, csr []byte) ([][]byte, string, error) {
	chain, err := t.ca.SignRequest(csr, pki.NodeName(node), workerCertLifetime)
	if err != nil {
		return nil, "", fmt.Errorf("%w: worker certificate: %v", ErrInvalid, err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, "", err
	}
	return chain, pki.PinOf(leaf), nil
}
