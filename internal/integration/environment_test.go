package integration

import (
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
	out, err := ssh(key, port, "cd proj && hac run -- ~/venvs/v1/bin/python -c 'import sys, hacmod_venv; print(hacmod_venv.WHERE, sys.prefix)' 2>/dev/null; hac run -- whoami 2>/dev/null")
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
}
