// Package ticket signs and checks the one-time tickets that let hac run
// connect to a node's agent. The control plane signs a ticket with the node's
// key when it grants a job; the agent checks it without asking anyone.
package ticket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Header carries the ticket on every call to a node's worker API, so that
// the node refuses a call without a valid one before it reads the body.
const Header = "Hac-Ticket"

// Claims is what a ticket grants.
type Claims struct {
	JobID int64 `json:"job"`
	// User is the job's user: a node shares what it keeps of ended jobs
	// out among users.
	User      int64    `json:"usr,omitempty"`
	Node      string   `json:"node"`
	Model     string   `json:"model"`
	MemoryMiB int64    `json:"mem"`
	GPUs      []string `json:"gpus"`
	// Rank and Nodes place this node among the job's nodes (0-based rank).
	Rank    int   `json:"rank"`
	Nodes   int   `json:"nodes"`
	Expires int64 `json:"exp"` // Unix seconds
	// Detached: the job runs without its client (hac run -d); the node
	// keeps its output and files.
	Detached bool `json:"det,omitempty"`
	// Access is what a ticket of OpenJob lets its holder do with a job
	// already started (AccessOutput, AccessAttach, AccessFetch); empty for
	// the one-time ticket that starts it (Exec).
	Access string `json:"acc,omitempty"`
	Environment
}

// What a ticket of OpenJob is for (Claims.Access).
const (
	AccessOutput = "output"
	AccessAttach = "attach"
	AccessFetch  = "fetch"
)

// Environment is what a job's root is made of on a node: for a server made
// by hac, its image (by digest) under the server's own changes, which the
// client ships; else (Image empty) the node's runtime.
type Environment struct {
	// Server keys the node's cache of the server's changes.
	Server int64 `json:"srv,omitempty"`
	// Image is the digest of the server's image (package image).
	Image string `json:"img,omitempty"`
	// HostUsr: the image shows the host's /usr, so jobs see the node's.
	HostUsr bool `json:"husr,omitempty"`
}

var (
	// ErrInvalid means the ticket is malformed or its signature is wrong.
	ErrInvalid = errors.New("ticket: invalid ticket")
	// ErrExpired means the ticket is too old.
	ErrExpired = errors.New("ticket: expired ticket")
)

var enc = base64.RawURLEncoding

// Sign returns the ticket for c signed with key.
func Sign(key []byte, c Claims) string {
	body, _ := json.Marshal(c)
	payload := enc.EncodeToString(body)
	return payload + "." + enc.EncodeToString(mac(key, payload))
}

// Verify checks a ticket's signature and expiry and returns its claims.
func Verify(key []byte, tok string, now time.Time) (Claims, error) {
	payload, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return Claims{}, ErrInvalid
	}
	got, err := enc.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(key, payload)) {
		return Claims{}, ErrInvalid
	}
	body, err := enc.DecodeString(payload)
	if err != nil {
		return Claims{}, ErrInvalid
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if now.Unix() > c.Expires {
		return Claims{}, ErrExpired
	}
	return c, nil
}

func mac(key []byte, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}
