package local

import (
	"fmt"
	"os"
	"path/filepath"
)

// Images are the server images the local driver can build.
var Images = map[string]string{
	"host": "the host's /usr, read-only, under a minimal root (Python, PyTorch and OpenSSH as installed on this machine); fast, for tests and single-machine setups",
}

// hostImageFiles is the minimal root of the "host" image: everything but
// /usr, which is the host's, mounted read-only.
var hostImageFiles = map[string]string{
	"etc/passwd": `root:x:0:0:root:/root:/bin/bash
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash
`,
	"etc/group": `root:x:0:
nogroup:x:65534:
ubuntu:x:1000:
`,
	// "*": no password; not "!", which sshd treats as a locked account.
	"etc/shadow": `root:*:20000:0:99999:7:::
sshd:*:20000:0:99999:7:::
nobody:*:20000:0:99999:7:::
ubuntu:*:20000:0:99999:7:::
`,
	"etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
	"etc/ssh/sshd_config": `# hac server: key login as ubuntu only.
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/authorized_keys/%u
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
PrintMotd no
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
`,
	"etc/profile": `export PATH=/usr/local/bin:/usr/bin:/bin
export LANG=C.UTF-8
`,
	"etc/bash.bashrc": "",
}

// ensureImage builds an image's root once and returns its path.
func (d *Driver) ensureImage(name string) (string, error) {
	if _, ok := Images[name]; !ok {
		return "", fmt.Errorf("vm/local: no image %q", name)
	}
	root := filepath.Join(d.cfg.DataDir, "images", name, "rootfs")
	if _, err := os.Stat(filepath.Join(root, ".complete")); err == nil {
		return root, nil
	}
	tmp := root + ".building"
	os.RemoveAll(tmp)
	for _, dir := range []string{"usr", "etc/ssh/authorized_keys", "etc/hac", "home/ubuntu", "root", "tmp", "proc", "sys", "dev", "run/sshd", "var/empty", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(tmp, dir), 0o755); err != nil {
			return "", err
		}
	}
	os.Chmod(filepath.Join(tmp, "tmp"), 0o1777)
	os.Chmod(filepath.Join(tmp, "var/tmp"), 0o1777)
	os.Chmod(filepath.Join(tmp, "root"), 0o700)
	os.Chown(filepath.Join(tmp, "home/ubuntu"), 1000, 1000)
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(tmp, l)); err != nil {
			return "", err
		}
	}
	for p, content := range hostImageFiles {
		mode := os.FileMode(0o644)
		if p == "etc/shadow" {
			mode = 0o640
		}
		if err := os.WriteFile(filepath.Join(tmp, p), []byte(content), mode); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(root)
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return "", err
	}
	return root, os.Rename(tmp, root)
}
