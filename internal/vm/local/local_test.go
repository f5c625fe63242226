package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/hac-project/hac/internal/keypair"
	"github.com/hac-project/hac/internal/vm"
)

// TestMain lets the test binary, which is the driver's HacBinary here,
// run as a server's console logger.
func TestMain(m *testing.M) {
	if IsConsoleLogger(os.Args[0]) {
		os.Exit(RunConsoleLogger(os.Args))
	}
	os.Exit(m.Run())
}

func testDriver(t testing.TB, bridge, subnet string) *Driver {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the local driver needs root")
	}
	for _, tool := range []string{"runc", "nft", "ssh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps)", tool)
		}
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Skip("openssh-server not installed (scripts/install-deps)")
	}
	cfg := DefaultConfig(t.TempDir())
	cfg.Bridge, cfg.Subnet, cfg.Table = bridge, subnet, bridge
	exe, _ := os.Executable()
	cfg.HacBinary = exe
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.RemoveRules(context.Background())
		exec.Command("ip", "link", "del", bridge).Run()
	})
	return d
}

// sshTo runs a command over SSH as ubuntu through a public port.
func sshTo(key string, port int, command ...string) (string, error) {
	args := []string{"-i", key, "-p", strconv.Itoa(port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR", "ubuntu@127.0.0.1"}
	out, err := exec.Command("ssh", append(args, command...)...).CombinedOutput()
	return string(out), err
}

// TestServerLifecycle makes a server, reaches its sshd through a forward
// once (and only once) a firewall rule allows it, and deletes it without a
// trace.
func TestServerLifecycle(t *testing.T) {
	d := testDriver(t, "hactest0", "10.78.0.0/24")
	ctx := context.Background()
	g, err := keypair.Generate("ed25519", "test")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "k.pem")
	os.WriteFile(key, g.PrivatePEM, 0o600)
	spec := vm.Spec{ID: "t1", Hostname: "web1", CPUs: 1, MemoryMiB: 512, DiskBytes: 64 << 20, Image: "host", Address: "10.78.0.2",
		AuthorizedKeys: []string{g.AuthorizedKey},
		Files:          []vm.File{{Path: "/home/ubuntu/sample/hello.txt", Mode: 0o644, UID: 1000, GID: 1000, Data: []byte("hi\n")}}}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, "t1") })
	if st, err := d.Status(ctx, "t1"); err != nil || st != vm.Running {
		t.Fatalf("status %v %v", st, err)
	}
	fwd := vm.Forward{Protocol: "tcp", PublicPort: 10022, Address: "10.78.0.2", PrivatePort: 22}
	if err := d.ApplyRules(ctx, vm.Rules{Forwards: []vm.Forward{fwd}}); err != nil {
		t.Fatal(err)
	}
	if out, err := sshTo(key, 10022, "hostname"); err == nil {
		t.Fatalf("ssh got through without a firewall rule: %s", out)
	}
	fwd.Allow = []string{"10.99.0.0/16"}
	d.ApplyRules(ctx, vm.Rules{Forwards: []vm.Forward{fwd}})
	if out, err := sshTo(key, 10022, "hostname"); err == nil {
		t.Fatalf("ssh got through from a source the rule does not allow: %s", out)
	}
	fwd.Allow = []string{"0.0.0.0/0"}
	d.ApplyRules(ctx, vm.Rules{Forwards: []vm.Forward{fwd}})
	var out string
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err = sshTo(key, 10022, "hostname; id -un; cat sample/hello.txt; ls -ld sample | cut -d' ' -f3")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // sshd is starting
	}
	if err != nil || out != "web1\nubuntu\nhi\nubuntu\n" {
		console, _ := os.ReadFile(filepath.Join(d.dir("t1"), "console.log"))
		t.Fatalf("ssh: %v %q (console: %s)", err, out, console)
	}
	// Its root is mounted where only the servers' root group passes.
	for p := d.runDir("t1"); p != "/run"; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o710 || fi.Sys().(*syscall.Stat_t).Gid != DefaultIDBase {
			t.Errorf("%s: %v %v, want 0710 and group %d", p, fi.Mode(), err, DefaultIDBase)
		}
	}
	// The root disk holds what the server writes, up to its size.
	big, err := os.Create(filepath.Join(d.rootfs("t1"), "home", "ubuntu", "big"))
	if err != nil {
		t.Fatal(err)
	}
	var wrote int64
	chunk := make([]byte, 1<<20)
	for wrote < 200<<20 {
		n, err := big.Write(chunk)
		wrote += int64(n)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("writing past the disk: %v, want ENOSPC", err)
			}
			break
		}
	}
	big.Close()
	if wrote > 64<<20 || wrote < 32<<20 {
		t.Errorf("a server with a 64 MiB disk wrote %d MiB", wrote>>20)
	}
	// The host's /sys tells nothing of other servers: no network devices,
	// no cgroups.
	if out, err := sshTo(key, 10022, "ls -A /sys/class/net /sys/devices/virtual/net /sys/fs/cgroup | grep -v ':$' | grep -c . ; ls /sys/devices/system/cpu | grep -c cpu"); err != nil || !strings.HasPrefix(out, "0\n") || strings.HasPrefix(strings.Split(out, "\n")[1], "0") {
		t.Errorf("what the server sees in /sys: %q %v (want 0 network devices and cgroups, some CPUs)", out, err)
	}
	// The server's root floods its console (its init's output): 3 MiB.
	state, err := exec.Command("runc", "--root", filepath.Join(d.cfg.DataDir, "runc"), "state", containerID("t1")).Output()
	var st struct{ Pid int }
	if err != nil || json.Unmarshal(state, &st) != nil || st.Pid == 0 {
		t.Fatalf("runc state: %v %s", err, state)
	}
	// The server's root is not the host's: a user namespace maps it to
	// IDBase, and its processes are that uid on the host.
	uidMap, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.Pid))
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.Pid))
	if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != "0" || f[1] != strconv.Itoa(DefaultIDBase) || f[2] != "65536" {
		t.Errorf("the server's uid_map: %q, want 0 %d 65536", uidMap, DefaultIDBase)
	}
	if !regexp.MustCompile(`(?m)^Uid:\s+` + strconv.Itoa(DefaultIDBase) + `\s`).Match(status) {
		t.Errorf("the server's init is not uid %d on the host:\n%s", DefaultIDBase, status)
	}
	// Its console logger lives in the server's cgroups, not the driver's.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	found := false
	for _, p := range procs {
		cmdline, _ := os.ReadFile(p)
		if strings.HasPrefix(string(cmdline), consoleLoggerArg0+"\x00"+filepath.Join(d.dir("t1"), "console.log")) {
			found = true
			if cg, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cgroup")); !strings.Contains(string(cg), "/hac-servers/t1") {
				t.Errorf("the console logger's cgroups:\n%s", cg)
			}
		}
	}
	if !found {
		t.Error("no console logger runs for t1")
	}
	flood, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/1", st.Pid), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	flood.Write(bytes.Repeat([]byte("flood\n"), 3<<20/6))
	flood.Close()
	time.Sleep(200 * time.Millisecond)
	var logged int64
	for _, name := range []string{"console.log", "console.log.1"} {
		if fi, err := os.Stat(filepath.Join(d.dir("t1"), name)); err == nil {
			logged += fi.Size()
		}
	}
	if logged == 0 || logged > 2*consoleMaxBytes {
		t.Errorf("the console logs hold %d bytes after a 3 MiB flood, want 1 to %d", logged, 2*consoleMaxBytes)
	}
	if err := d.Delete(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.GetFromName(netnsName("t1")); err == nil {
		t.Error("the network namespace is left")
	}
	if _, err := os.Stat(d.dir("t1")); err == nil {
		t.Error("the server's folder is left")
	}
	if raw, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(raw), d.dir("t1")) {
		t.Error("a mount is left")
	}
	if out, _ := exec.Command("losetup", "-a").Output(); strings.Contains(string(out), d.dir("t1")) {
		t.Errorf("a loop device is left: %s", out)
	}
	if st, _ := d.Status(ctx, "t1"); st != vm.Missing {
		t.Errorf("status after delete: %s", st)
	}
}

func TestRulesetGolden(t *testing.T) {
	got := ruleset("hac", "127.0.0.1", "10.77.0.0/24", "hacbr0", "10.77.0.1", vm.Rules{Forwards: []vm.Forward{
		{Protocol: "tcp", PublicPort: 10022, Address: "10.77.0.2", PrivatePort: 22, Allow: []string{"0.0.0.0/0"}},
	}, HostPorts: []int{7471, 7470}, Tenants: [][]vm.Member{{{ID: "s2", Address: "10.77.0.2"}, {ID: "s3", Address: "10.77.0.3"}}, {{ID: "s4", Address: "10.77.0.4"}}}})
	for _, want := range []string{
		"ip daddr 127.0.0.1 tcp dport 10022 dnat to 10.77.0.2:22",
		"ct state new ct status dnat meta l4proto tcp ct original ip daddr 127.0.0.1 ct original proto-dst 10022 jump allow_tcp_10022",
		"chain allow_tcp_10022 {\n\t\tip saddr 0.0.0.0/0 accept\n\t\tdrop\n\t}",
		"table bridge hac {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname != \"hacv-*\" accept\n\t\tether type ip6 drop\n\t\tiifname \"hacv-s2\" ether type ip ip saddr != 10.77.0.2 drop\n\t\tiifname \"hacv-s2\" ether type arp arp saddr ip != 10.77.0.2 drop\n",
		"\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tiifname != \"hacv-*\" accept\n\t\tether type ip6 drop\n",
		"oifname \"hacbr0\" meta skuid 0 accept\n\t\toifname \"hacbr0\" drop\n",
		"\t\tiifname { \"hacv-s2\", \"hacv-s3\" } oifname != { \"hacv-s2\", \"hacv-s3\" } drop\n\t\tiifname { \"hacv-s4\" } oifname != { \"hacv-s4\" } drop\n\t\tiifname != { \"hacv-s2\", \"hacv-s3\", \"hacv-s4\" } drop\n",
		"iifname \"hacbr0\" ip daddr 10.77.0.1 tcp dport 7470 accept\n\t\tiifname \"hacbr0\" ip daddr 10.77.0.1 tcp dport 7471 accept\n\t\tiifname \"hacbr0\" drop",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if err := ValidateForward(vm.Forward{Protocol: "tcp", PublicPort: 1, Address: "10.0.0.1", PrivatePort: 22, Allow: []string{"10.0.0.1/8"}}); err == nil {
		t.Error("accepted an unmasked CIDR")
	}
}

// TestConsoleLogIsBounded: a console that writes without end leaves at
// most two logs of consoleMaxBytes, the newest output in the first.
func TestConsoleLogIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	exe, _ := os.Executable()
	cmd := exec.Command(exe, path, "1000")
	cmd.Args[0] = consoleLoggerArg0
	var in strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&in, "line %04d\n", i) // 10 bytes each
	}
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("logger: %v %s", err, out)
	}
	cur, err1 := os.ReadFile(path)
	prev, err2 := os.ReadFile(path + ".1")
	if err1 != nil || err2 != nil || len(cur) > 1000 || len(prev) != 1000 {
		t.Fatalf("logs of %d and %d bytes (%v %v), want at most 1000 each", len(cur), len(prev), err1, err2)
	}
	if !strings.HasSuffix(string(cur), "line 0999\n") || !strings.HasSuffix(string(prev), "line 0899\n") {
		t.Fatalf("the newest lines are not kept: ...%q / ...%q", cur[len(cur)-20:], prev[len(prev)-20:])
	}
}
