package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve answers TLS handshakes with cert until the test ends.
func serve(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func dial(addr, pin, serverName string) error {
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(addr)
	}
	c, err := tls.Dial("tcp", addr, ClientConfig(pin, serverName))
	if err == nil {
		c.Close()
	}
	return err
}

func TestCAIsKeptAndPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil || again.Pin() != ca.Pin() {
		t.Fatalf("the CA changed on a second start: %v", err)
	}
	for name, want := range map[string]os.FileMode{".": 0o700, "ca.key": 0o600} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v, want mode %v", name, err, want)
		}
	}
	if _, err := ParsePin(strings.ToUpper(ca.Pin())); err != nil {
		t.Errorf("ParsePin(its own pin): %v", err)
	}
}

// TestPinnedClient: a client that pins the CA accepts the API's
// certificate for its names only, refuses another CA's, and refuses a
// node's worker certificate in the API's place.
func TestPinnedClient(t *testing.T) {
	ca, _ := LoadOrCreateCA(t.TempDir())
	other, _ := LoadOrCreateCA(t.TempDir())
	api, err := ca.IssueServer([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, api)
	if err := dial(addr, ca.Pin(), ""); err != nil {
		t.Fatalf("pinned, right name: %v", err)
	}
	if err := dial(addr, other.Pin(), ""); !errors.Is(err, ErrPin) {
		t.Errorf("another CA's pin: %v", err)
	}
	if err := dial(addr, ca.Pin(), "cp.example.com"); err == nil || !strings.Contains(err.Error(), "--tls-name cp.example.com") {
		t.Errorf("a name the certificate lacks: %v", err)
	}
	if err := dial(addr, "", ""); err == nil {
		t.Errorf("no pin trusts the system's roots, which do not hold hac's CA")
	}

}

// TestWorkerNames: a worker certificate stands for its own node only,
// and never for the control plane.
func TestWorkerNames(t *testing.T) {
	ca, _ := LoadOrCreateCA(t.TempDir())
	// The request asks for the control plane's names; the CA decides.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, key)
	chain, err := ca.SignRequest(csr, NodeName("gpu1"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if len(leaf.IPAddresses) != 0 || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "gpu1.node.hac" {
		t.Fatalf("worker certificate names: %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	addr := serve(t, tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf})
	if err := dial(addr, ca.Pin(), NodeName("gpu1")); err != nil {
		t.Fatalf("gpu1's own name: %v", err)
	}
	if err := dial(addr, ca.Pin(), NodeName("gpu2")); err == nil {
		t.Error("gpu1's certificate passed for gpu2")
	}
	if err := dial(addr, ca.Pin(), ""); err == nil {
		t.Error("a worker certificate passed for the control plane at 127.0.0.1")
	}
	if !IsNodeName("GPU1.node.hac.") || IsNodeName("node.hac.example.com") {
		t.Error("IsNodeName")
	}
}

func TestSignRequestRefuses(t *testing.T) {
	ca, _ := LoadOrCreateCA(t.TempDir())
	_, csr, _ := NewRequest()
	broken := append([]byte(nil), csr...)
	broken[len(broken)-5] ^= 0xff // the signature
	for name, der := range map[string][]byte{"empty": nil, "garbage": []byte("not a request"), "bad signature": broken, "huge": make([]byte, 1<<20)} {
		if _, err := ca.SignRequest(der, "n.node.hac", time.Hour); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestParsePin(t *testing.T) {
	for _, bad := range []string{"", "sha256:", "sha256:xyz", "sha1:" + strings.Repeat("0", 64), "sha256:" + strings.Repeat("0", 63)} {
		if _, err := ParsePin(bad); err == nil {
			t.Errorf("ParsePin(%q) accepted", bad)
		}
	}
}

// FuzzSignRequest: whatever a node sends as its certificate request, the
// CA signs only well-formed, self-signed ECDSA requests, for the name it
// was told, and never panics.
func FuzzSignRequest(f *testing.F) {
	ca, err := LoadOrCreateCA(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	_, csr, _ := NewRequest()
	f.Add(csr)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		chain, err := ca.SignRequest(der, "n.node.hac", time.Hour)
		if err != nil {
			return
		}
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "n.node.hac" || leaf.IsCA {
			t.Fatalf("signed %x as %v, %v", der, leaf, err)
		}
	})
}
