package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file is the adversarial suite of SPEC P8: each test is an attack a
// hostile tenant would try, and must fail to break in (docs/SECURITY.md).

// tenant creates a user and a server of theirs, and returns the server's
// environment.
func (c *cluster) tenant(user, server string) []string {
	c.t.Helper()
	r := runHac(c.t, c.user(user), "", nil, "server", "register", server)
	tok := regexp.MustCompile(`hacs_[A-Z0-9]+`).FindString(r.stdout)
	if r.code != 0 || tok == "" {
		c.t.Fatalf("register %s as %s: %+v", server, user, r)
	}
	return c.serverEnv(tok)
}

// user makes a user and returns an environment that acts as them.
func (c *cluster) user(name string) []string {
	c.t.Helper()
	r := c.hac(nil, "", "user", "create", name)
	f := strings.Fields(r.stdout)
	if r.code != 0 || len(f) == 0 || !strings.HasPrefix(f[len(f)-1], "hacu_") {
		c.t.Fatalf("user create %s: %+v", name, r)
	}
	return c.apiEnv(f[len(f)-1])
}

// nodeCredential is a node agent's own credential, from its data folder.
func (c *cluster) nodeCredential(name string) string {
	raw, err := os.ReadFile(filepath.Join(c.dir, name, "node-credential.json"))
	var cred struct{ Token string }
	if err != nil || json.Unmarshal(raw, &cred) != nil || cred.Token == "" {
		c.t.Fatalf("node %s's credential: %v", name, err)
	}
	return cred.Token
}

// snoopScript is what a hostile job runs to look for another tenant's
// workspace, blobs, environment, processes and the node's credentials.
const snoopScript = `
echo "uid=$(id -u)"
ls ../../ ../../1/work 2>&1
cat ../../1/work/secret.txt 2>&1
echo "processes: $(ls /proc | grep -c '^[0-9]')"
cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -i secret
echo "commands: $(cat /proc/[0-9]*/comm | tr '\n' ' ')"
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' | grep -o 'hac[nj]_[A-Z0-9]\{8,\}'
find / \( -path /proc -o -path /sys -o -path /usr \) -prune -o \( -name 'secret.txt' -o -name 'hac.d''b' -o -name 'credentials.js''on' -o -name 'blo''bs' -o -name 'tenant''-a*' \) -print 2>/dev/null
echo "cgroup: $(cut -d: -f3 /proc/self/cgroup | sort -u | tr '\n' ' ')"
echo $$ > /sys/fs/cgroup/cgroup.procs 2>&1 || echo "cgroup escape refused"
echo tampered > /proc/1/root/tmp/x 2>&1 || echo "init root refused"
`

// TestAttackJobReadsAnotherTenant: a job of tenant B looks for tenant A's
// running workspace, cached blobs, environment and processes, and for the
// node's token, which every job could once read on the node.
func TestAttackJobReadsAnotherTenant(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sandboxes need root")
	}
	c := newCluster(t, "fake:2x80GiB")
	alice, bob := c.tenant("alice", "a1"), c.tenant("bob", "b1")
	dir := workdir(t, map[string]string{"tenant-a-model.bin": "tenant-a-blob-content"})
	p := start(t, alice, dir, nil, "run", "-e", "A_SECRET=tenant-a-env-secret", "--", "sh", "-c",
		`echo tenant-a-file-secret > secret.txt; `+holdScript)
	eventually(t, 30*time.Second, "tenant A's job to start", func() bool { return strings.Contains(p.stdout.String(), "ready") })

	r := runHac(t, bob, workdir(t, nil), nil, "run", "--", "sh", "-c", snoopScript)
	t.Logf("what tenant B's job saw:\n%s%s", r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("snoop job: %+v", r)
	}
	for _, leak := range []string{"tenant-a", "A_SECRET", c.nodeCredential("node1"), "hacn_", "hacj_", "hac.db", "credentials.json", "blobs", "uid=0\n"} {
		if strings.Contains(r.stdout, leak) {
			t.Errorf("tenant B's job saw %q", leak)
		}
	}
	for _, want := range []string{"cgroup: / \n", "cgroup escape refused", "init root refused"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tenant B's job output lacks %q", want)
		}
	}
	if n := regexp.MustCompile(`processes: (\d+)`).FindStringSubmatch(r.stdout); n == nil || len(n[1]) > 1 {
		t.Errorf("tenant B's job saw more than its own few processes: %v", n)
	}
	stopHolder(t, c, "node1", c.jobs()[len(c.jobs())-1].ID)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("tenant A's job: exit %d, %s", code, p.stderr.String())
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "secret.txt")); string(got) != "tenant-a-file-secret\n" {
		t.Errorf("tenant A's file did not come back: %q", got)
	}
}

// TestAttackUploadProbesAnotherTenant: a tenant whose manifest names
// content another tenant sent to the node is asked for that content, so
// that what a node asks for says nothing of other tenants' files (a
// confirmation attack on a guessed file: a password in a known template,
// a colleague's checkpoint), and a hash alone never brings the content.
func TestAttackUploadProbesAnotherTenant(t *testing.T) {
	c := newCluster(t, "fake:2x80GiB")
	alice, bob := c.tenant("alice", "a1"), c.tenant("bob", "b1")
	files := map[string]string{"config.yaml": "password: hunter2\n"}
	received := func() []string {
		return regexp.MustCompile(`blobs_received=(\d+)`).FindAllString(c.agents[0].stderr.String(), -1)
	}
	for i, who := range []struct {
		name string
		env  []string
		want string
	}{
		{"alice", alice, "blobs_received=1"}, // new to the node
		{"alice", alice, "blobs_received=0"}, // hers
		{"bob", bob, "blobs_received=1"},     // alice's, not his
		{"bob", bob, "blobs_received=0"},     // now his too
	} {
		if r := runHac(t, who.env, workdir(t, files), nil, "run", "--", "cat", "config.yaml"); r.code != 0 || r.stdout != files["config.yaml"] {
			t.Fatalf("%s's run %d: %+v", who.name, i+1, r)
		}
		if got := received(); len(got) != i+1 || got[i] != who.want {
			t.Fatalf("%s's run %d: the node's uploads %v, want the last %s", who.name, i+1, got, who.want)
		}
	}
}

// TestAttackNodeFilesArePrivate: the agent's and the control plane's data
// (blob cache, job folders, database, credentials) are the agent's user's
// alone on the node, so that no local user or job can read or plant them.
func TestAttackNodeFilesArePrivate(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	if r := runHac(t, env, workdir(t, map[string]string{"a.txt": "x"}), nil, "run", "--", "true"); r.code != 0 {
		t.Fatalf("run: %+v", r)
	}
	for path, want := range map[string]os.FileMode{
		filepath.Join(c.dir, "node1"):                  0o700,
		filepath.Join(c.dir, "node1", "blobs"):         0o700,
		filepath.Join(c.dir, "cp"):                     0o700,
		filepath.Join(c.dir, "cp", "hac.db"):           0o600,
		filepath.Join(c.dir, "cp", "credentials.json"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %v", path, fi.Mode().Perm(), err, want)
		}
	}
	filepath.WalkDir(filepath.Join(c.dir, "node1", "blobs"), func(p string, d os.DirEntry, err error) error {
		if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("blob cache entry %s has mode %v", p, fi.Mode().Perm())
		}
		return nil
	})
}

// forkBomb forks sleeping children until the kernel refuses, at most 2000.
const forkBomb = `
import os, time
n = 0
for i in range(2000):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed:", e.strerror)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print("forked", n)
`

// TestAttackForkBombAndUngrantedGPU: a job's fork bomb stops at the node's
// pids limit, and a job can open only the GPU it was granted.
func TestAttackForkBombAndUngrantedGPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sandboxes need root")
	}
	c := newCluster(t)
	c.agentArgs = []string{"--job-pids", "64"}
	c.addAgent("node1", "fake:2x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	r := runHac(t, env, workdir(t, nil), nil, "run", "--", "/usr/bin/python3", "-c", forkBomb)
	if r.code != 0 || !strings.Contains(r.stdout, "fork failed: Resource temporarily unavailable") {
		t.Fatalf("fork bomb: %+v", r)
	}
	var forked int
	fmt.Sscanf(r.stdout[strings.Index(r.stdout, "forked"):], "forked %d", &forked)
	if forked >= 64 {
		t.Errorf("the fork bomb made %d processes under --job-pids 64", forked)
	}
	r = runHac(t, env, workdir(t, nil), nil, "run", "--", "sh", "-c",
		`echo "visible=$CUDA_VISIBLE_DEVICES"; for d in /dev/nvidia0 /dev/nvidia1; do cat $d 2>&1; done; cat /dev/nvidiactl 2>&1`)
	t.Logf("%s", r.stdout)
	granted := regexp.MustCompile(`visible=GPU-fake-node1-(\d)`).FindStringSubmatch(r.stdout)
	if granted == nil {
		t.Fatalf("no granted GPU: %+v", r)
	}
	other := map[string]string{"0": "1", "1": "0"}[granted[1]]
	for _, want := range []string{
		"/dev/nvidia" + granted[1] + ": No such device or address", // allowed: reaches the (absent) driver
		"/dev/nvidia" + other + ": Operation not permitted",        // the device filter
		"/dev/nvidiactl: No such device or address",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The node is fine afterwards.
	if r := runHac(t, env, workdir(t, nil), nil, "run", "--", "echo", "still-here"); r.stdout != "still-here\n" {
		t.Fatalf("run after the attacks: %+v", r)
	}
}

// TestAttackSyncBack: a program (or a node) cannot use the files that come
// back to write into the client's .git/ or out of its folder through
// symlinks, and an interrupted sync-back is reported, leaving no partial
// file.
func TestAttackSyncBack(t *testing.T) {
	c := newCluster(t)
	c.agentArgs = []string{"--sync-interval", "0"} // files come back at the end only
	c.addAgent("node1", "fake:1x80GiB")
	env := c.serverEnv(c.register("web1", ""))
	dir := workdir(t, map[string]string{"train.py": "print(1)"})
	r := runHac(t, env, dir, nil, "run", "--", "sh", "-c",
		`mkdir -p .git/hooks && echo 'echo owned' > .git/hooks/post-checkout; ln -s /etc/passwd passwd; ln -s ../../../x up; echo fine > result.txt`)
	if r.code != 0 {
		t.Fatalf("run: %+v", r)
	}
	for _, p := range []string{".git", "passwd", "up"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s came back", p)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "result.txt")); string(got) != "fine\n" {
		t.Errorf("result.txt = %q", got)
	}
	if !strings.Contains(r.stderr, ".git/, which hac never writes") || !strings.Contains(r.stderr, "outside the folder") {
		t.Errorf("no warnings for the refused files: %s", r.stderr)
	}

	// The node dies while a large output comes back.
	p := start(t, env, dir, nil, "run", "--", "sh", "-c", `head -c 1073741824 /dev/zero > big.bin`)
	eventually(t, 60*time.Second, "the output to start coming back", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, ".hac-incoming-*"))
		return len(m) > 0
	})
	c.agents[0].cmd.Process.Kill()
	if code := p.exitCode(); code == 0 || !strings.Contains(p.stderr.String(), "did not all come back") {
		t.Fatalf("hac run after the node died mid-sync: exit %d, %s", code, p.stderr.String())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".hac-incoming-*")); len(m) > 0 {
		t.Errorf("partial files left: %v", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "big.bin")); err == nil {
		t.Errorf("a partial big.bin is in place")
	}
}

// TestAttackJobToJob: jobs on one node have networks of their own. Bob's
// job cannot connect to the port Alice's job listens on, to a service of
// the node on 127.0.0.1 or on its own addresses, or to the instance
// metadata address; it still reaches the network beyond the node (a peer
// in a namespace of the test's own).
func TestAttackJobToJob(t *testing.T) {
	c := newCluster(t, "fake:2x80GiB")
	alice, bob := c.tenant("alice", "a1"), c.tenant("bob", "b1")
	listen := `/usr/bin/python3 -c '
import socket
s = socket.socket(); s.bind(("0.0.0.0", 29555)); s.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("10.83.0.2", 9))
print("ip", u.getsockname()[0], "ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"ALICE-SECRET\n"); c.close()
'`
	p, _ := startRun(t, c, alice, listen)
	defer p.cmd.Process.Signal(syscall.SIGINT)
	var aliceIP string
	eventually(t, 10*time.Second, "alice's job's address", func() bool {
		m := regexp.MustCompile(`ip (100\.\S+)`).FindStringSubmatch(p.stdout.String())
		if m != nil {
			aliceIP = m[1]
		}
		return m != nil
	})
	hostPort := listenHost(t, "0.0.0.0:0")
	peer := peerNetns(t, "hacit-jobpeer", "10.83.0.1", "10.83.0.2")
	outside := exec.Command("ip", "netns", "exec", peer, "/usr/bin/python3", "-c", `
import socket
s = socket.socket(); s.bind(("0.0.0.0", 29556)); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"OUTSIDE\n"); c.close()`)
	// The peer also plays a cloud's instance metadata service.
	for _, args := range [][]string{{"-n", peer, "addr", "add", "169.254.169.254/32", "dev", peer + "-p"}, {"route", "add", "169.254.169.254/32", "via", "10.83.0.2"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	if err := outside.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outside.Process.Kill(); outside.Wait() })
	eventually(t, 5*time.Second, "the outside peer to listen", func() bool {
		return strings.Contains(inNetns(t, peer, tcpProbe("10.83.0.2", 29556, "")), "REACHED")
	})
	probe := func(host string, port int) string {
		return fmt.Sprintf(`timeout 3 /usr/bin/python3 -c 'import socket; print(socket.create_connection(("%s", %d), timeout=2).recv(64).decode().strip() or "REACHED")' 2>/dev/null || echo refused`, host, port)
	}
	if out, _ := exec.Command("bash", "-c", tcpProbe("169.254.169.254", 29556, "")).CombinedOutput(); !strings.Contains(string(out), "REACHED") {
		t.Fatal("the node cannot reach the test's metadata service (the test is broken)")
	}
	r := c.hac(bob, workdir(t, nil), "run", "--", "sh", "-c", probe(aliceIP, 29555)+"; "+probe("127.0.0.1", hostPort)+"; "+probe("10.83.0.1", hostPort)+"; "+probe("169.254.169.254", 29556)+"; "+probe("10.83.0.2", 29556))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 5 {
		t.Fatalf("bob's probes: %+v", r)
	}
	for i, what := range []string{"alice's job at " + aliceIP, "a node service on 127.0.0.1", "a node service on its own address", "the instance metadata address"} {
		if lines[i] != "refused" {
			t.Errorf("bob's job reached %s: %q", what, lines[i])
		}
	}
	if lines[4] != "OUTSIDE" {
		t.Errorf("bob's job cannot reach the network beyond the node: %q", lines[4])
	}
}
