// Package apiclient holds what every client of hac's APIs shares: an
// HTTP/2 transport over TLS that trusts a pinned CA, and the bearer-token
// interceptor.
package apiclient

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"

	"connectrpc.com/connect"

	"github.com/hac-project/hac/internal/pki"
)

// New returns an HTTP client for the control plane's API: its
// certificate must be for the host dialed, from the CA that pin names
// (pki.ClientConfig).
func New(pin string) *http.Client {
	return withTLS(func(host string) *tls.Config { return pki.ClientConfig(pin, host) })
}

// Worker returns an HTTP client for node's worker service, whose
// certificate comes from the CA that caPin names for the key that keyPin
// names (pki.WorkerConfig).
func Worker(caPin, keyPin, node string) *http.Client {
	return withTLS(func(string) *tls.Config { return pki.WorkerConfig(caPin, keyPin, node) })
}

// withTLS speaks HTTP/2, which Connect's bidirectional streams need, over
// TLS configured by config for the host dialed.
func withTLS(config func(host string) *tls.Config) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg := config(host)
		cfg.NextProtos = []string{"h2", "http/1.1"}
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
	}
	// Nothing goes out in clear, whatever the URL says.
	plain := func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("hac's APIs speak TLS only: use an https:// address")
	}
	return &http.Client{Transport: &http.Transport{DialTLSContext: dial, DialContext: plain, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
}

// Bearer adds "Authorization: Bearer TOKEN" to every request.
func Bearer(tok string) connect.Interceptor { return bearer(tok) }

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
