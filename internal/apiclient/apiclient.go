// Package apiclient holds what every client of hac's APIs shares: an
// HTTP/2 cleartext transport and the bearer-token interceptor.
package apiclient

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
)

// H2C returns an HTTP client that speaks HTTP/2 without TLS, which
// Connect's bidirectional streams need.
func H2C() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p, MaxIdleConnsPerHost: 64}}
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
