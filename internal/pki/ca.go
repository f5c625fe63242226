package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CA is a certificate authority: a certificate and its private key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// caLifetime is how long a CA made by LoadOrCreateCA is valid.
const caLifetime = 10 * 365 * 24 * time.Hour

// LoadOrCreateCA returns the CA kept in dir (ca.crt, ca.key), making it on
// first use. The key file is 0600 and dir 0700.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if _, err := os.Stat(keyPath); err == nil {
		return LoadCA(certPath, keyPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "hac CA " + now.UTC().Format("2006-01-02 15:04:05")},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	// The key first, then the certificate: a crash between them leaves a
	// key without a certificate, which LoadCA reports (move the key away to
	// make a new CA; no node has trusted it yet).
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA's PEM certificate and PEM private key.
func LoadCA(certPath, keyPath string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: load the CA: %w (restore %s and %s, or move them away to make a new CA, then enroll every node again)", err, certPath, keyPath)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate with a signing key", certPath)
	}
	return &CA{Cert: pair.Leaf, Key: signer}, nil
}

// Pin is the CA's pin.
func (ca *CA) Pin() string { return PinOf(ca.Cert) }

// IssueServer makes a key and a certificate for names (DNS names or IP
// addresses), valid for ttl, with the chain (leaf, CA) a TLS server sends.
func (ca *CA) IssueServer(names []string, ttl time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	chain, err := ca.sign(key.Public(), names, ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// maxCSRBytes bounds a certificate request from a node.
const maxCSRBytes = 8 << 10

// SignRequest issues a server certificate for name, valid for ttl, to the
// key of a PKCS #10 request, after checking the request's signature. The
// names the request asks for are ignored: the caller decides the name.
func (ca *CA) SignRequest(csrDER []byte, name string, ttl time.Duration) ([][]byte, error) {
	if len(csrDER) == 0 || len(csrDER) > maxCSRBytes {
		return nil, fmt.Errorf("pki: a certificate request of %d bytes: want 1 to %d", len(csrDER), maxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("pki: certificate request: want an ECDSA P-256 or P-384 key")
		}
	default:
		return nil, errors.New("pki: certificate request: want an ECDSA key")
	}
	return ca.sign(csr.PublicKey, []string{name}, ttl)
}

func (ca *CA) sign(pub crypto.PublicKey, names []string, ttl time.Duration) ([][]byte, error) {
	if len(names) == 0 {
		return nil, errors.New("pki: a certificate needs a name")
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    now.Add(-5 * time.Minute), // clocks differ a little
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return [][]byte{der, ca.Cert.Raw}, nil
}

// NodeName is the name a node's worker certificate is issued for.
func NodeName(node string) string { return node + NodeSuffix }

// NodeSuffix ends every worker certificate's name; no other certificate
// of hac's CA has a name that ends so.
const NodeSuffix = ".node.hac"

// IsNodeName reports whether name is one that only worker certificates
// carry.
func IsNodeName(name string) bool {
	return strings.HasSuffix(strings.ToLower(strings.TrimSuffix(name, ".")), NodeSuffix)
}

// NewRequest makes a key and a PKCS #10 request for it (the agent's worker
// certificate).
func NewRequest() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	return key, der, err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
