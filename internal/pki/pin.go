package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// PinPrefix starts every pin.
const PinPrefix = "sha256:"

// PinOf is a certificate's pin: sha256:HEX of its public key.
func PinOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return PinPrefix + hex.EncodeToString(sum[:])
}

// SystemRoots is the pin that trusts the system's certificate
// authorities instead of one pinned CA (an operator's certificate from a
// public CA): it must be asked for by name.
const SystemRoots = "system"

// ParsePin checks a pin's form and returns it in lower case.
func ParsePin(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == SystemRoots {
		return s, nil
	}
	h, ok := strings.CutPrefix(s, PinPrefix)
	if raw, err := hex.DecodeString(h); !ok || err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("pki: %q is not a CA pin: want sha256: and 64 hex digits (hac serve prints it), or %q", s, SystemRoots)
	}
	return s, nil
}

// ErrPin means the peer's certificate chain holds no certificate with the
// pinned key.
var ErrPin = errors.New("pki: the peer's certificate is not from the pinned CA")

// ErrNoPin means a client was given no pin: it trusts nobody.
var ErrNoPin = errors.New("pki: no CA pin to check the peer's certificate against (hac serve prints it)")

// ClientConfig is a TLS client configuration for a peer whose
// certificate must carry serverName (a DNS name or an address), from the
// certificate authority that pin names and no other. The peer sends its
// chain (leaf, CA): the certificate with the pinned key becomes the root
// that the leaf is verified against, as a TLS server. The pin SystemRoots
// trusts the system's roots instead; an empty pin trusts nothing.
func ClientConfig(pin, serverName string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if pin == SystemRoots {
		return cfg
	}
	if pin == "" {
		cfg.InsecureSkipVerify = true // replaced by VerifyConnection
		cfg.VerifyConnection = func(tls.ConnectionState) error { return ErrNoPin }
		return cfg
	}
	// The name is checked here, not from the connection's state: a client
	// sends no server name for an address, and the state's is then empty.
	cfg.InsecureSkipVerify = true // replaced by VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPinned(pin, serverName, cs) }
	return cfg
}

// WorkerConfig is ClientConfig for node's worker service: its certificate
// is issued for NodeName(node) by the CA that caPin names, and its key is
// the one keyPin names (the node's current one, from the grant).
func WorkerConfig(caPin, keyPin, node string) *tls.Config {
	cfg := ClientConfig(caPin, NodeName(node))
	verifyCA := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verifyCA(cs); err != nil {
			return err
		}
		if keyPin == "" || PinOf(cs.PeerCertificates[0]) != keyPin {
			return fmt.Errorf("%w: node %s's certificate is not for its registered key (an earlier machine under the name?): run the program again", ErrPin, node)
		}
		return nil
	}
	return cfg
}

func verifyPinned(pin, serverName string, cs tls.ConnectionState) error {
	if serverName == "" {
		return errors.New("pki: no server name to check the peer's certificate against")
	}
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return ErrPin
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	found := false
	for _, c := range certs {
		if PinOf(c) == pin {
			roots.AddCert(c)
			found = true
		} else {
			inter.AddCert(c)
		}
	}
	if !found {
		return fmt.Errorf("%w %s (it is from %q): check the ca_pin in your configuration against the one hac serve prints", ErrPin, pin, certs[len(certs)-1].Issuer.CommonName)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{DNSName: serverName, Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		var host x509.HostnameError
		if errors.As(err, &host) && !IsNodeName(serverName) {
			return fmt.Errorf("pki: %w (if %s is the control plane's address, start hac serve with --tls-name %s)", err, serverName, serverName)
		}
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
