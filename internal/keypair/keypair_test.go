package keypair

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestPPKMatchesPuTTYgen converts a key with PuTTYgen and with PPK and
// compares the files byte for byte.
func TestPPKMatchesPuTTYgen(t *testing.T) {
	if _, err := exec.LookPath("puttygen"); err != nil {
		t.Skip("puttygen not installed (apt-get install putty-tools)")
	}
	for _, typ := range Types {
		t.Run(typ, func(t *testing.T) {
			g, err := Generate(typ, "key1")
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			pem := filepath.Join(dir, "key1.pem")
			os.WriteFile(pem, g.PrivatePEM, 0o600)
			want, err := exec.Command("puttygen", pem, "-O", "private", "-o", "/dev/stdout", "--ppk-param", "version=2").Output()
			if err != nil {
				t.Fatalf("puttygen: %v", err)
			}
			if string(g.PPK) != string(want) {
				t.Fatalf("PPK differs from puttygen's:\n%s\nwant:\n%s", g.PPK, want)
			}
			// The PEM is a key OpenSSH reads, and its public half is ours.
			out, err := exec.Command("ssh-keygen", "-y", "-f", pem).Output()
			if err != nil || !strings.HasPrefix(g.AuthorizedKey, strings.TrimSpace(string(out))) {
				t.Fatalf("ssh-keygen -y: %v %q vs %q", err, out, g.AuthorizedKey)
			}
		})
	}
}

func TestParsePublic(t *testing.T) {
	g, _ := Generate("ed25519", "me@laptop")
	p, err := ParsePublic(g.AuthorizedKey + "\n")
	if err != nil || p.Fingerprint != g.Fingerprint || p.Type != "ed25519" {
		t.Fatalf("ParsePublic = %+v, %v", p, err)
	}
	for _, bad := range []string{"", "ssh-ed25519", "hello world", `command="rm -rf /" ` + g.AuthorizedKey, g.AuthorizedKey + "\n" + g.AuthorizedKey} {
		if _, err := ParsePublic(bad); !errors.Is(err, ErrBadPublicKey) {
			t.Errorf("ParsePublic(%q) = %v", bad, err)
		}
	}
	if _, err := Generate("dsa", ""); err == nil {
		t.Error("Generate accepted dsa")
	}
}

func FuzzParsePublic(f *testing.F) {
	g, _ := Generate("ed25519", "c")
	f.Add(g.AuthorizedKey)
	f.Add("ssh-rsa AAAA")
	f.Fuzz(func(t *testing.T, line string) {
		p, err := ParsePublic(line)
		if err != nil {
			return
		}
		// What we store must parse again to the same key.
		again, err := ParsePublic(p.AuthorizedKey)
		if err != nil || again.Fingerprint != p.Fingerprint {
			t.Fatalf("stored form %q does not round-trip: %v", p.AuthorizedKey, err)
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(p.AuthorizedKey)); err != nil {
			t.Fatal(err)
		}
	})
}
