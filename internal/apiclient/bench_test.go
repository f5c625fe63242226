package apiclient

import (
	"net"
	"net/http"
	"testing"

	"github.com/hac-project/hac/internal/pki"
)

// BenchmarkFirstRequest measures what a new hac process pays per peer: a
// new client, its connection, and one HTTP/2 request on loopback. The
// baseline is the same over cleartext HTTP/2 (h2c, what hac spoke before
// TLS); the difference is the TLS handshake with pinned verification.
func BenchmarkFirstRequest(b *testing.B) {
	ca, err := pki.LoadOrCreateCA(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	b.Run("baseline=h2c", func(b *testing.B) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		srv := &http.Server{Handler: handler, Protocols: p}
		go srv.Serve(ln)
		defer srv.Close()
		url := "http://" + ln.Addr().String() + "/"
		for b.Loop() {
			c := &http.Client{Transport: &http.Transport{Protocols: p}}
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			c.CloseIdleConnections()
		}
	})
	b.Run("tls-pinned", func(b *testing.B) {
		addr := serve(b, ca, "127.0.0.1")
		url := "https://" + addr + "/"
		for b.Loop() {
			c := New(ca.Pin())
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			c.CloseIdleConnections()
		}
	})
}
