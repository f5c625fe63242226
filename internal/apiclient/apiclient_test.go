package apiclient

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hac-project/hac/internal/pki"
)

// serve answers HTTPS on loopback with a certificate for names; lastKeyPin
// is then its key's pin.
func serve(t testing.TB, ca *pki.CA, names ...string) string {
	cert, err := ca.IssueServer(names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lastKeyPin = pki.PinOf(cert.Leaf)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(r.Proto)) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

var lastKeyPin string

// TestNewChecksTheDialedAddress: the certificate must be for the address
// dialed, even an IP address (for which TLS sends no server name), and
// the connection is HTTP/2.
func TestNewChecksTheDialedAddress(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good := serve(t, ca, "127.0.0.1")
	resp, err := New(ca.Pin()).Get("https://" + good + "/")
	if err != nil {
		t.Fatalf("a certificate for 127.0.0.1: %v", err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("protocol %s, want HTTP/2.0", resp.Proto)
	}
	other := serve(t, ca, "localhost", "10.9.9.9")
	if _, err := New(ca.Pin()).Get("https://" + other + "/"); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("a certificate without 127.0.0.1 passed: %v", err)
	}
	_, port, _ := net.SplitHostPort(other)
	if resp, err := New(ca.Pin()).Get("https://localhost:" + port + "/"); err != nil {
		t.Errorf("by name: %v", err)
	} else {
		resp.Body.Close()
	}
	earlier := serve(t, ca, pki.NodeName("gpu1")) // an earlier machine's key
	worker := serve(t, ca, pki.NodeName("gpu1"))
	key := lastKeyPin
	if resp, err := Worker(ca.Pin(), key, "gpu1").Get("https://" + worker + "/"); err != nil {
		t.Errorf("worker gpu1: %v", err)
	} else {
		resp.Body.Close()
	}
	if _, err := Worker(ca.Pin(), key, "gpu2").Get("https://" + worker + "/"); err == nil {
		t.Error("gpu1's certificate passed for gpu2")
	}
	if _, err := Worker(ca.Pin(), key, "gpu1").Get("https://" + earlier + "/"); err == nil || !strings.Contains(err.Error(), "registered key") {
		t.Errorf("a certificate for gpu1 with another key passed: %v", err)
	}
	if _, err := Worker(ca.Pin(), "", "gpu1").Get("https://" + worker + "/"); err == nil {
		t.Error("a grant without a key pin passed")
	}
}
