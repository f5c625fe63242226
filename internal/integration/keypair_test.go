package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyPairs covers SPEC S1 from the command line: create with a .pem
// (0600) and a .ppk that OpenSSH and PuTTY read, import, list, refusals,
// delete.
func TestKeyPairs(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	r := c.hac(nil, dir, "keypair", "create", "keypair1", "--ppk")
	if r.code != 0 || !strings.Contains(r.stdout, `Key pair "keypair1" created (ed25519, SHA256:`) {
		t.Fatalf("create: %+v", r)
	}
	pem := filepath.Join(dir, "keypair1.pem")
	st, err := os.Stat(pem)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keypair1.pem: %v %v", st, err)
	}
	pub, err := exec.Command("ssh-keygen", "-y", "-f", pem).Output()
	if err != nil {
		t.Fatalf("ssh-keygen cannot read keypair1.pem: %v", err)
	}
	var list struct {
		KeyPairs []struct {
			Name, Type, Fingerprint, PublicKey string
		} `json:"keyPairs"`
	}
	lr := c.hac(nil, "", "keypair", "list", "-o", "json")
	if err := json.Unmarshal([]byte(lr.stdout), &list); err != nil || len(list.KeyPairs) != 1 {
		t.Fatalf("list: %v %+v", err, lr)
	}
	if !strings.HasPrefix(list.KeyPairs[0].PublicKey, strings.TrimSpace(string(pub))) {
		t.Errorf("stored public key %q is not the .pem's %q", list.KeyPairs[0].PublicKey, pub)
	}
	if _, err := exec.LookPath("puttygen"); err == nil {
		out, err := exec.Command("puttygen", filepath.Join(dir, "keypair1.ppk"), "-O", "public-openssh", "-o", "/dev/stdout").Output()
		if err != nil || !strings.HasPrefix(string(out), strings.TrimSpace(string(pub))) {
			t.Errorf("puttygen reads keypair1.ppk as %q, %v", out, err)
		}
	}
	// The same name again: refused before anything is created.
	if r := c.hac(nil, dir, "keypair", "create", "keypair1"); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("existing file: %+v", r)
	}
	if r := c.hac(nil, t.TempDir(), "keypair", "create", "keypair1"); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("duplicate name: %+v", r)
	}
	if r := c.hac(nil, dir, "keypair", "create", "../evil"); r.code != 1 || !strings.Contains(r.stderr, "key pair name") {
		t.Errorf("bad name: %+v", r)
	}
	rsaDir := t.TempDir()
	if r := c.hac(nil, rsaDir, "keypair", "create", "old-windows", "--type", "rsa", "--ppk"); r.code != 0 || !strings.Contains(r.stdout, "(rsa, ") {
		t.Errorf("rsa: %+v", r)
	}
	// Import a public key made elsewhere.
	kdir := t.TempDir()
	if err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", filepath.Join(kdir, "id")).Run(); err != nil {
		t.Fatal(err)
	}
	if r := c.hac(nil, kdir, "keypair", "import", "laptop", "id.pub"); r.code != 0 || !strings.Contains(r.stdout, `Key pair "laptop" imported`) {
		t.Errorf("import: %+v", r)
	}
	os.WriteFile(filepath.Join(kdir, "bad.pub"), []byte("ssh-ed25519 AAAAnotakey\n"), 0o644)
	if r := c.hac(nil, kdir, "keypair", "import", "bad", "bad.pub"); r.code != 1 || !strings.Contains(r.stderr, "not a usable SSH public key") {
		t.Errorf("bad import: %+v", r)
	}
	if r := c.hac(nil, "", "keypair", "list"); !strings.Contains(r.stdout, "laptop") || !strings.Contains(r.stdout, "old-windows") {
		t.Errorf("list: %+v", r)
	}
	if r := c.hac(nil, "", "keypair", "delete", "laptop"); r.code != 0 {
		t.Errorf("delete: %+v", r)
	}
	if r := c.hac(nil, "", "keypair", "delete", "laptop"); r.code != 1 || !strings.Contains(r.stderr, "no key pair named") {
		t.Errorf("delete twice: %+v", r)
	}
}

// TestReferenceModels covers SPEC S10 from the command line, with a user
// token and with a server's own token.
func TestReferenceModels(t *testing.T) {
	c := newCluster(t)
	r := c.hac(nil, "", "reference-model", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "fashion-mlp") || !strings.Contains(r.stdout, "transformer-char") {
		t.Fatalf("list: %+v", r)
	}
	dir := t.TempDir()
	env := c.serverEnv(c.register("web1", ""))
	r = runHac(t, env, dir, nil, "reference-model", "get", "transformer-char")
	if r.code != 0 || !strings.Contains(r.stdout, "hac run -- python3 train.py") {
		t.Fatalf("get: %+v", r)
	}
	for _, f := range []string{"train.py", "corpus.txt"} {
		if _, err := os.Stat(filepath.Join(dir, "transformer-char", f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if r := runHac(t, env, dir, nil, "reference-model", "get", "transformer-char"); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("second get: %+v", r)
	}
	if r := c.hac(nil, dir, "reference-model", "get", "gpt-5"); r.code != 1 || !strings.Contains(r.stderr, "unknown reference model") {
		t.Errorf("unknown: %+v", r)
	}
}
