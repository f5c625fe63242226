// Package guard puts limits before work on the network listeners of the
// control plane and the agent (SPEC P8): a cap on open connections, in all
// and per remote address, so that one peer's idle or half-sent requests
// cannot take every descriptor; server timeouts; header and HTTP/2 limits.
// Message sizes are bounded where the API is served (connect's read
// limits), and credentials are checked before a body is read.
package guard
