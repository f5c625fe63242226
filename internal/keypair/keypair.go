// Package keypair makes and checks the SSH key pairs that log users into
// their servers (SPEC S1): the control plane generates a key, hands the
// private half out once (OpenSSH PEM, and PuTTY .ppk on request) and keeps
// only the public key and its fingerprint.
package keypair

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Types are the key types Generate makes.
var Types = []string{"ed25519", "rsa"}

// ErrBadPublicKey is returned for a public key that cannot be used.
var ErrBadPublicKey = errors.New("keypair: not a usable SSH public key")

// Generated is a fresh key pair.
type Generated struct {
	// PrivatePEM is the private key in OpenSSH format, for NAME.pem.
	PrivatePEM []byte
	// PPK is the private key as a PuTTY key file (version 2, unencrypted).
	PPK []byte
	Public
}

// Public is what the control plane keeps.
type Public struct {
	// AuthorizedKey is the authorized_keys line, with the comment.
	AuthorizedKey string
	// Fingerprint is OpenSSH's SHA256:... form.
	Fingerprint string
	Type        string
}

// Generate makes a key pair of the given type ("ed25519" or "rsa", RSA
// 3072 bits) with a comment.
func Generate(typ, comment string) (Generated, error) {
	var priv crypto.Signer
	switch typ {
	case "ed25519", "":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return Generated{}, err
		}
		priv = k
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return Generated{}, err
		}
		priv = k
	default:
		return Generated{}, fmt.Errorf("keypair: key type %q: use ed25519 or rsa", typ)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return Generated{}, err
	}
	signer, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		return Generated{}, err
	}
	ppk, err := PPK(priv, comment)
	if err != nil {
		return Generated{}, err
	}
	return Generated{PrivatePEM: pem.EncodeToMemory(block), PPK: ppk, Public: describe(signer.PublicKey(), comment)}, nil
}

func describe(pub ssh.PublicKey, comment string) Public {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	typ := strings.TrimPrefix(pub.Type(), "ssh-")
	return Public{AuthorizedKey: line, Fingerprint: ssh.FingerprintSHA256(pub), Type: typ}
}

// allowedTypes are the public key algorithms an imported key may use.
var allowedTypes = map[string]bool{
	ssh.KeyAlgoED25519: true, ssh.KeyAlgoRSA: true, ssh.KeyAlgoECDSA256: true, ssh.KeyAlgoECDSA384: true,
	ssh.KeyAlgoECDSA521: true, ssh.KeyAlgoSKED25519: true, ssh.KeyAlgoSKECDSA256: true,
}

// ParsePublic checks an imported public key (one authorized_keys line, as
// in NAME.pub) and describes it. Options before the key are refused, and
// RSA keys must have at least 2048 bits.
func ParsePublic(line string) (Public, error) {
	line = strings.TrimSpace(line)
	if line == "" || strings.ContainsAny(line, "\n\r") {
		return Public{}, fmt.Errorf("%w: give exactly one line, as in id_ed25519.pub", ErrBadPublicKey)
	}
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return Public{}, fmt.Errorf("%w: %v", ErrBadPublicKey, err)
	}
	if len(options) > 0 || len(rest) > 0 {
		return Public{}, fmt.Errorf("%w: options and extra lines are not allowed", ErrBadPublicKey)
	}
	if !allowedTypes[pub.Type()] {
		return Public{}, fmt.Errorf("%w: key type %s is not accepted", ErrBadPublicKey, pub.Type())
	}
	if ck, ok := pub.(ssh.CryptoPublicKey); ok {
		if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
			return Public{}, fmt.Errorf("%w: an RSA key needs at least 2048 bits, this one has %d", ErrBadPublicKey, rk.N.BitLen())
		}
	}
	comment = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, comment)
	return describe(pub, comment), nil
}
