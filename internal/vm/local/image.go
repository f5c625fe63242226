package local

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hac-project/hac/internal/image"
	"github.com/hac-project/hac/internal/vm"
)

// Images are the server images the local driver can build.
var Images = map[string]string{
	"debian-12": "Debian 12 (bookworm) from Debian's repository with OpenSSH, Python 3 and PyTorch; built with debootstrap on first use (a few minutes), then cached",
	"host":      "the host's /usr, read-only, under a minimal root (Python, PyTorch and OpenSSH as installed on this machine); fast, for tests and single-machine setups",
}

// DefaultImage is the image of a server created without --image.
const DefaultImage = "debian-12"

// debianPackages go into the debian-12 image beside the minimal base.
var debianPackages = []string{"openssh-server", "python3", "python3-torch", "procps", "iproute2", "ca-certificates", "less"}

// sharesHostUsr reports whether an image mounts the host's /usr.
func sharesHostUsr(image string) bool { return image == "host" }

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
		return "", fmt.Errorf("vm/local: no image %q (images: debian-12, host)", name)
	}
	root := filepath.Join(d.cfg.DataDir, "images", name, "rootfs")
	if _, err := os.Stat(filepath.Join(root, ".complete")); err == nil {
		return root, nil
	}
	tmp := root + ".building"
	unmountUnder(tmp)
	os.RemoveAll(tmp)
	if name == "debian-12" {
		if err := d.debianBase(tmp); err != nil {
			os.RemoveAll(tmp)
			return "", err
		}
	}
	for _, dir := range []string{"usr", "etc/ssh/authorized_keys", "etc/hac", "home/ubuntu", "root", "tmp", "proc", "sys", "dev", "run/sshd", "var/empty", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(tmp, dir), 0o755); err != nil {
			return "", err
		}
	}
	os.Chmod(filepath.Join(tmp, "tmp"), 0o1777)
	os.Chmod(filepath.Join(tmp, "var/tmp"), 0o1777)
	os.Chmod(filepath.Join(tmp, "root"), 0o700)
	os.Chown(filepath.Join(tmp, "home/ubuntu"), 1000, 1000)
	if sharesHostUsr(name) {
		for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
			if err := os.Symlink("usr/"+l, filepath.Join(tmp, l)); err != nil {
				return "", err
			}
		}
	} else {
		// Host keys are made per server; the image's would be shared.
		keys, _ := filepath.Glob(filepath.Join(tmp, "etc/ssh/ssh_host_*"))
		for _, k := range keys {
			os.Remove(k)
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
	// Nodes know an image by its digest: computed with the build, so
	// that no job's grant waits for it.
	digest, err := image.Digest(tmp)
	if err != nil {
		return "", fmt.Errorf("vm/local: the digest of image %s: %w", name, err)
	}
	os.RemoveAll(root)
	d.digestMu.Lock()
	delete(d.digests, name)
	d.digestMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, root); err != nil {
		return "", err
	}
	if err := os.WriteFile(digestFile(root), []byte(digest), 0o644); err != nil {
		return "", err
	}
	d.digestMu.Lock()
	d.digests[name] = digest
	d.digestMu.Unlock()
	return root, nil
}

// digestImages computes the digests of images built before digests were.
func (d *Driver) digestImages() {
	for name := range Images {
		root := filepath.Join(d.cfg.DataDir, "images", name, "rootfs")
		if _, err := os.Stat(filepath.Join(root, ".complete")); err != nil {
			continue
		}
		d.ImageDigest(name) // reads the digest, or computes it once
	}
}

// debianBase installs Debian 12 with debianPackages into dir: from the
// image cache (Config.ImageCache) when it holds a build of the same
// inputs, else with debootstrap, whose result the cache then keeps.
func (d *Driver) debianBase(dir string) error {
	var cached string
	if d.cfg.ImageCache != "" {
		cached = filepath.Join(d.cfg.ImageCache, "debian-12-"+debianKey(d.cfg.Mirror, time.Now())+".tar")
		if _, err := os.Stat(cached); err == nil {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if exec.CommandContext(d.ctx, "tar", "--numeric-owner", "--xattrs", "-xpf", cached, "-C", dir).Run() == nil {
				return nil
			}
			// A damaged cache entry is built again.
			os.Remove(cached)
			os.RemoveAll(dir)
		}
	}
	err := d.debootstrap(dir)
	unmountUnder(dir) // debootstrap mounts /proc and /sys inside
	if err != nil || cached == "" {
		return err
	}
	if err := os.MkdirAll(d.cfg.ImageCache, 0o700); err != nil {
		return nil // the cache is an optimisation
	}
	partial := cached + ".partial"
	if exec.CommandContext(d.ctx, "tar", "--numeric-owner", "--xattrs", "-cf", partial, "-C", dir, ".").Run() == nil {
		os.Rename(partial, cached)
	}
	os.Remove(partial)
	return nil
}

// debianKey names a debian-12 base by what goes into it: the packages,
// the mirror, and the week (packages move on; a week-old base is
// rebuilt).
func debianKey(mirror string, now time.Time) string {
	year, week := now.ISOWeek()
	sum := sha256.Sum256([]byte(fmt.Sprintf("bookworm minbase %s %s %d-W%02d", strings.Join(debianPackages, ","), mirror, year, week)))
	return hex.EncodeToString(sum[:8])
}

// debootstrap installs Debian 12 with debianPackages into dir.
func (d *Driver) debootstrap(dir string) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("vm/local: the debian-12 image needs debootstrap: apt-get install debootstrap (or use --image host)")
	}
	cmd := exec.CommandContext(d.ctx, "debootstrap", "--variant=minbase", "--include="+strings.Join(debianPackages, ","), "bookworm", dir, d.cfg.Mirror)
	// Stopping the driver stops the whole build, dpkg and all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return fmt.Errorf("vm/local: debootstrap: %v: %s", err, lines[len(lines)-1])
	}
	return nil
}

// BuildImage builds an image now (hac image build) and returns its root.
func (d *Driver) BuildImage(name string) (string, error) {
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	return d.ensureImage(name)
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	points := mountsUnder(dir)
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

func digestFile(root string) string { return filepath.Join(filepath.Dir(root), "digest") }

// ImageDigest names an image's root for GPU nodes (package image): jobs of
// its servers run on it there. It is computed once per build (seconds for
// debian-12), kept beside the root and in memory.
func (d *Driver) ImageDigest(name string) (string, error) {
	d.digestMu.Lock()
	digest, ok := d.digests[name]
	d.digestMu.Unlock()
	if ok {
		return digest, nil
	}
	root, err := d.BuildImage(name)
	if err != nil {
		return "", err
	}
	if raw, err := os.ReadFile(digestFile(root)); err == nil && image.ValidDigest(string(raw)) {
		digest = string(raw)
	} else {
		if digest, err = image.Digest(root); err != nil {
			return "", fmt.Errorf("vm/local: the digest of image %s: %w", name, err)
		}
		if err := os.WriteFile(digestFile(root), []byte(digest), 0o644); err != nil {
			return "", err
		}
	}
	d.digestMu.Lock()
	d.digests[name] = digest
	d.digestMu.Unlock()
	return digest, nil
}

// ImageDigests are the digests of the images built (and digested) so far.
func (d *Driver) ImageDigests() []string {
	d.digestMu.Lock()
	defer d.digestMu.Unlock()
	out := make([]string, 0, len(d.digests))
	for _, digest := range d.digests {
		out = append(out, digest)
	}
	sort.Strings(out)
	return out
}

// ImageSharesHostUsr reports whether an image's servers see the host's
// /usr: their jobs then see the node's.
func (d *Driver) ImageSharesHostUsr(name string) bool { return sharesHostUsr(name) }

// WriteImage writes the image with this digest as image.Write does; an
// image built again since has another digest, and is not found.
func (d *Driver) WriteImage(digest string, w io.Writer) error {
	for name := range Images {
		root := filepath.Join(d.cfg.DataDir, "images", name, "rootfs")
		if raw, err := os.ReadFile(digestFile(root)); err == nil && string(raw) == digest {
			return image.Write(root, w)
		}
	}
	return fmt.Errorf("%w: no image has digest %s", vm.ErrNotFound, digest)
}
