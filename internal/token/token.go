// Package token makes and hashes the bearer tokens of users, servers and
// nodes. Only hashes are stored; a token is shown once, when it is made.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Prefixes tell token kinds apart at a glance (and to secret scanners).
const (
	UserPrefix   = "hacu_"
	ServerPrefix = "hacs_"
	NodePrefix   = "hacn_"
	JoinPrefix   = "hacj_"
)

// New returns a fresh random token with the given prefix.
func New(prefix string) string {
	var b [20]byte
	rand.Read(b[:])
	return prefix + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// Hash returns the stored form of a token.
func Hash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// PublicID returns a fresh 24-character public identifier, the accelerator
// "Token" that hac smi shows. It grants nothing.
func PublicID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])[:24]
}

// WithPin appends a CA pin (sha256:HEX) to a join token, as hacj_SECRET.HEX,
// so that the token alone tells an agent which control plane to trust.
func WithPin(tok, pin string) string {
	return tok + "." + strings.TrimPrefix(pin, pinPrefix)
}

// PinIn returns the CA pin inside a join token, or "" when it has none.
func PinIn(tok string) string {
	_, hex, ok := strings.Cut(tok, ".")
	if !ok {
		return ""
	}
	return pinPrefix + hex
}

const pinPrefix = "sha256:"
