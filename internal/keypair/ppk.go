package keypair

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"

	"golang.org/x/crypto/ssh"
)

// PPK encodes a private key as an unencrypted PuTTY key file, version 2,
// which every PuTTY since 0.52 reads (0.75 and later read version 3 too),
// so that Windows users need no PuTTYgen conversion (SPEC S1).
func PPK(priv crypto.Signer, comment string) ([]byte, error) {
	signer, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		return nil, err
	}
	pub := signer.PublicKey()
	var private []byte
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		private = sshString(nil, k.Seed())
	case *rsa.PrivateKey:
		if len(k.Primes) != 2 {
			return nil, fmt.Errorf("keypair: PuTTY needs a two-prime RSA key")
		}
		// PuTTY's canonical order is p > q, with iqmp = q^-1 mod p.
		p, q := k.Primes[0], k.Primes[1]
		if p.Cmp(q) < 0 {
			p, q = q, p
		}
		private = mpint(private, k.D)
		private = mpint(private, p)
		private = mpint(private, q)
		private = mpint(private, new(big.Int).ModInverse(q, p))
	default:
		return nil, fmt.Errorf("keypair: no PuTTY encoding for %T", priv)
	}
	alg, public := pub.Type(), pub.Marshal()
	var macData []byte
	for _, part := range [][]byte{[]byte(alg), []byte("none"), []byte(comment), public, private} {
		macData = sshString(macData, part)
	}
	key := sha1.Sum([]byte("putty-private-key-file-mac-key"))
	m := hmac.New(sha1.New, key[:])
	m.Write(macData)
	var b strings.Builder
	fmt.Fprintf(&b, "PuTTY-User-Key-File-2: %s\nEncryption: none\nComment: %s\n", alg, comment)
	writeLines(&b, "Public-Lines", public)
	writeLines(&b, "Private-Lines", private)
	fmt.Fprintf(&b, "Private-MAC: %s\n", hex.EncodeToString(m.Sum(nil)))
	return []byte(b.String()), nil
}

func writeLines(b *strings.Builder, label string, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	n := (len(enc) + 63) / 64
	fmt.Fprintf(b, "%s: %d\n", label, n)
	for i := 0; i < len(enc); i += 64 {
		b.WriteString(enc[i:min(i+64, len(enc))] + "\n")
	}
}

func sshString(buf, s []byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}

// mpint appends an SSH multiple-precision integer (positive).
func mpint(buf []byte, n *big.Int) []byte {
	b := n.Bytes()
	if len(b) > 0 && b[0]&0x80 != 0 {
		b = append([]byte{0}, b...)
	}
	return sshString(buf, b)
}
