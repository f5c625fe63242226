package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// environmentSetup changes a server as its user would: a module in the
// user site-packages (pip install --user), a package the image lacks, a
// virtualenv outside the project, a file no one may read, and a project.
const environmentSetup = `set -e
site=~/.local/lib/python3.11/site-packages
mkdir -p $site/notinimage ~/proj ~/venvs/v1/bin ~/venvs/v1/lib/python3.11/site-packages
echo 'WHERE = "user site"' > $site/hacmod_user.py
echo 'def answer(): return 42' > $site/notinimage/__init__.py
printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n' > ~/venvs/v1/pyvenv.cfg
ln -sf /usr/bin/python3 ~/venvs/v1/bin/python
echo 'WHERE = "venv"' > ~/venvs/v1/lib/python3.11/site-packages/hacmod_venv.py
echo hidden > ~/secret && chmod 000 ~/secret
cat > ~/proj/probe.py <<'PY'
import os, sys
import hacmod_user, notinimage
print("exe", sys.executable, sys.version.split()[0])
print("cwd", os.getcwd(), os.environ["HOME"])
print("user", hacmod_user.WHERE, notinimage.answer(), hacmod_user.__file__)
try:
    open(os.path.expanduser("~/secret")).read()
    print("secret readable")
except PermissionError:
    print("secret denied")
PY
`

// checkServerEnvironment covers issue 14 point 6: what a user changed in
// a server made by hac is what the job sees on the GPU node: a module in
// ~/.local, a package the image lacks, a virtualenv outside the project,
// the server's interpreter and working directory, its user and home, and
// the seed's sample trains to the same losses as in the server.
func checkServerEnvironment(t *testing.T, key, port string) {
	if out, err := ssh(key, port, environmentSetup); err != nil {
		t.Fatalf("changing the server: %v\n%s", err, out)
	}
	local, err := ssh(key, port, "cd proj && python3 probe.py")
	if err != nil {
		t.Fatalf("the probe in the server: %v\n%s", err, local)
	}
	remote, err := ssh(key, port, "cd proj && hac run -- python3 probe.py 2>/tmp/hac.err || cat /tmp/hac.err")
	if err != nil || remote != local {
		t.Fatalf("the probe through hac run: %v\nin the server:\n%s\nthrough hac run:\n%s", err, local, remote)
	}
	if !strings.Contains(local, "cwd /home/ubuntu/proj /home/ubuntu") || !strings.Contains(local, "secret denied") {
		t.Fatalf("the probe in the server: %s", local)
	}
	// The server's view of its own layer is read-only, and the opaque mark
	// the client reads in it cannot be set from inside the server.
	out, err := ssh(key, port, `touch /.hac/layer/x 2>/dev/null && echo writable; mkdir -p ~/forge && python3 -c '
import os
os.setxattr(os.path.expanduser("~/forge"), "user.overlay.opaque", b"y")
try:
    os.getxattr("/.hac/layer/home/ubuntu/forge", "user.overlay.opaque"); print("forged")
except OSError:
    print("not forged")'`)
	if err != nil || out != "not forged\n" {
		t.Errorf("the layer view: %v %q", err, out)
	}
	out, err = ssh(key, port, "cd proj && hac run -- ~/venvs/v1/bin/python -c 'import sys, hacmod_venv; print(hacmod_venv.WHERE, sys.prefix)' 2>/dev/null; hac run -- whoami 2>/dev/null")
	if err != nil || out != "venv /home/ubuntu/venvs/v1\nubuntu\n" {
		t.Errorf("a virtualenv outside the project, and the user: %v %q", err, out)
	}
	// A second run ships nothing new; a changed module is seen at once.
	out, err = ssh(key, port, `echo 'WHERE = "changed"' > ~/.local/lib/python3.11/site-packages/hacmod_user.py; cd proj && hac run -- python3 -c 'import hacmod_user; print(hacmod_user.WHERE)' 2>/dev/null`)
	if err != nil || out != "changed\n" {
		t.Errorf("a changed module: %v %q", err, out)
	}
	losses := regexp.MustCompile(`(?m)^loss: .*$`)
	inServer, err := ssh(key, port, "cd sample && python3 train.py --samples 640")
	if err != nil {
		t.Fatalf("the sample in the server: %v\n%s", err, inServer)
	}
	viaHac, err := ssh(key, port, "cd sample && hac run -- python3 train.py --samples 640 2>/dev/null")
	want, got := losses.FindAllString(inServer, -1), losses.FindAllString(viaHac, -1)
	if err != nil || len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the sample's losses: %v\nin the server:\n%s\nthrough hac run:\n%s", err, inServer, viaHac)
	}
	// A PyTorch of the user's hides the image's: hac run says so, and hac
	// env reset moves it aside (point 4).
	image, err := ssh(key, port, "python3 -c 'import torch; print(torch.__version__)'")
	if err != nil {
		t.Fatalf("the image's torch: %v %s", err, image)
	}
	out, err = ssh(key, port, `site=~/.local/lib/python3.11/site-packages; mkdir -p $site/torch $site/torch-9.9.9.dist-info && echo "__version__ = '9.9.9'" > $site/torch/version.py && touch $site/torch/__init__.py && cd proj && hac run -- true 2>&1`)
	if err != nil || !strings.Contains(out, "torch (PyTorch 9.9.9) hides the image's PyTorch "+strings.TrimSpace(image)) || !strings.Contains(out, "hac env reset") {
		t.Errorf("a shadowed torch: %v\n%s", err, out)
	}
	out, err = ssh(key, port, "hac env reset && hac run -- python3 -c 'import torch, hacmod_user; print(torch.__version__)' 2>&1")
	if err != nil || !strings.Contains(out, "Moved /home/ubuntu/.local/lib/python3.11/site-packages/torch to ") || strings.Contains(out, "hides") || !strings.HasSuffix(out, image) {
		t.Errorf("hac env reset: %v\n%s", err, out)
	}
}

// TestRegisteredServerEnvironment covers issue 14 point 3: a registered
// machine names its base image, and its jobs run on that image with what
// the user's environment adds: the active virtualenv and the user
// site-packages. An unknown image is refused at registration.
func TestRegisteredServerEnvironment(t *testing.T) {
	c := portalCluster(t)
	if r := c.hac(nil, "", "server", "register", "reg2", "--image", "windows"); r.code == 0 || !strings.Contains(r.stderr, `unknown image "windows"`) || !strings.Contains(r.stderr, "debian-12, host") {
		t.Errorf("an unknown image: %+v", r)
	}
	r := c.hac(nil, "", "server", "register", "reg1", "--image", "host")
	tok := regexp.MustCompile(`hacs_[A-Z0-9]+`).FindString(r.stdout)
	if r.code != 0 || tok == "" {
		t.Fatalf("register with an image: %+v", r)
	}
	// Not under /tmp: the job has its own.
	base, err := os.MkdirTemp("/srv", "hac-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	home := filepath.Join(base, "home")
	site := filepath.Join(home, ".local/lib/python3.11/site-packages")
	venv := filepath.Join(base, "venv")
	for p, content := range map[string]string{
		filepath.Join(site, "hacmod_user.py"):                              "WHERE = 'user site'\n",
		filepath.Join(venv, "lib/python3.11/site-packages/hacmod_venv.py"): "WHERE = 'venv'\n",
		filepath.Join(venv, "pyvenv.cfg"):                                  "home = /usr/bin\ninclude-system-site-packages = false\n",
	} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o644)
	}
	os.MkdirAll(filepath.Join(venv, "bin"), 0o755)
	os.Symlink("/usr/bin/python3", filepath.Join(venv, "bin/python"))
	env := append(c.serverEnv(tok), "VIRTUAL_ENV="+venv, "HOME="+home)
	dir := workdir(t, map[string]string{"x.txt": "x"})
	out := runHac(t, env, dir, nil, "run", "--", "/usr/bin/python3", "-c", "import hacmod_user, os; print(hacmod_user.WHERE, os.getcwd())")
	if out.code != 0 || out.stdout != "user site "+dir+"\n" {
		t.Errorf("the user site-packages: %+v", out)
	}
	out = runHac(t, env, dir, nil, "run", "--", filepath.Join(venv, "bin/python"), "-c", "import hacmod_venv, sys; print(hacmod_venv.WHERE, sys.prefix)")
	if out.code != 0 || out.stdout != "venv "+venv+"\n" {
		t.Errorf("the virtualenv: %+v", out)
	}
	// From an empty folder (no workspace tree to let go of at the end,
	// which once crashed the agent), twice: the node is still there.
	for i := range 2 {
		if out := runHac(t, env, workdir(t, nil), nil, "run", "--", "true"); out.code != 0 {
			t.Fatalf("run %d from an empty folder: %+v", i+1, out)
		}
	}
}
