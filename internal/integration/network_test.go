package integration

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The attacks here come from a server whose user is root in it, with
// every network power inside its own namespace (run as ip netns exec on
// the server's namespace), and from a peer on another network of the
// host. They extend TestAttackServerToServer (docs/SECURITY.md).

// inNetns runs a shell script in a network namespace and returns its
// output.
func inNetns(t testing.TB, ns, script string) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns, "bash", "-c", script).CombinedOutput()
	return string(out)
}

// serverNetns finds the network namespace of the server at ip.
func serverNetns(t testing.TB, ip string) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "hac-s") && strings.Contains(inNetns(t, f, "ip -4 -o addr show dev eth0"), " "+ip+"/") {
			return f
		}
	}
	t.Fatalf("no network namespace has %s", ip)
	return ""
}

// tcpProbe is a script that prints REACHED when a TCP connection to
// host port succeeds within 3 seconds, else "refused".
func tcpProbe(host string, port int, extra string) string {
	return fmt.Sprintf("%s timeout 3 bash -c 'exec 3<>/dev/tcp/%s/%d' 2>/dev/null && echo REACHED || echo refused", extra, host, port)
}

// listenHost listens on addr on the host for the test's length.
func listenHost(t testing.TB, addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// udpHost listens for datagrams on addr on the host for the test's length;
// the function it returns counts those that came since its last call. A
// one-way packet is enough to attack a UDP service.
func udpHost(t testing.TB, addr string) (int, func() int) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).Port, func() int {
		time.Sleep(500 * time.Millisecond) // in flight
		mu.Lock()
		defer mu.Unlock()
		got := n
		n = 0
		return got
	}
}

// udpSend is a script that sends three datagrams to host port.
func udpSend(host string, port int, extra string) string {
	return fmt.Sprintf("%s for i in 1 2 3; do echo x > /dev/udp/%s/%d; done; true", extra, host, port)
}

// TestAttackServerNetwork: a server's root cannot reach another user's
// server over IPv6 link-local addresses, the host's services over IPv6 or
// through 127.0.0.1 (route_localnet on the bridge), or the host with
// another server's source address; a peer on another network of the host
// cannot reach the servers' subnet or the host's 127.0.0.1; a forward
// cannot take a port a host service listens on. A server's root cannot
// take an address that is not its server's. The host's processes other
// than root's (jobs, other accounts) cannot reach the servers.
func TestAttackServerNetwork(t *testing.T) {
	c := portalCluster(t)
	dir := t.TempDir()
	alice, bob := twoTenantsServers(t, c, dir)
	addr := func(env []string, name string) string { return serverAddr(t, env, dir, name) }
	a1, a2, b1 := addr(alice, "a1"), addr(alice, "a2"), addr(bob, "b1")
	nsA1, nsA2, nsB1 := serverNetns(t, a1), serverNetns(t, a2), serverNetns(t, b1)
	eventually(t, 30*time.Second, "the servers' sshd", func() bool {
		return strings.Contains(inNetns(t, nsA1, tcpProbe(a2, 22, "")), "REACHED") &&
			strings.Contains(inNetns(t, nsB1, tcpProbe(b1, 22, "")), "REACHED")
	})

	// IPv6: servers get no IPv6, but the kernel gives every interface a
	// link-local address; sshd listens on :: too.
	linkLocal := func(ns string) string {
		var ll string
		eventually(t, 10*time.Second, "a link-local address in "+ns, func() bool {
			ll = regexp.MustCompile(`fe80::[0-9a-f:]+`).FindString(inNetns(t, ns, "ip -6 -o addr show dev eth0 scope link -tentative"))
			return ll != ""
		})
		return ll
	}
	if out := inNetns(t, nsA1, tcpProbe(linkLocal(nsB1)+"%eth0", 22, "")); !strings.Contains(out, "refused") {
		t.Errorf("alice's a1 reached bob's b1 over IPv6 link-local: %q", out)
	}
	hostPort := listenHost(t, "[::]:0") // every address, both families
	gw6 := regexp.MustCompile(`fe80::[0-9a-f:]+`).FindString(func() string {
		out, _ := exec.Command("ip", "-6", "-o", "addr", "show", "dev", "hacit0", "scope", "link").Output()
		return string(out)
	}())
	if gw6 != "" {
		if out := inNetns(t, nsA1, tcpProbe(gw6+"%eth0", hostPort, "")); !strings.Contains(out, "refused") {
			t.Errorf("a1 reached a host service over IPv6 (%s): %q", gw6, out)
		}
	}
	if out := inNetns(t, nsA1, tcpProbe("10.79.0.1", hostPort, "")); !strings.Contains(out, "refused") {
		t.Errorf("a1 reached a host service on the gateway: %q", out)
	}

	// 127.0.0.1 from a server: the bridge has route_localnet (forwards
	// to 127.0.0.1 need it); a server root can route 127.0.0.1 out. One
	// datagram reaching a UDP service there is an attack.
	loPort, received := udpHost(t, "127.0.0.1:0")
	toLoopback := "ip route del local 127.0.0.0/8 dev lo table local 2>/dev/null; ip route del local 127.0.0.1 dev lo table local 2>/dev/null;" +
		" sysctl -qw net.ipv4.conf.eth0.route_localnet=1; ip route replace 127.0.0.1/32 via 10.79.0.1 dev eth0;"
	inNetns(t, nsA1, udpSend("127.0.0.1", loPort, toLoopback))
	if n := received(); n != 0 {
		t.Errorf("a1's datagrams reached the host's 127.0.0.1:%d (%d of 3)", loPort, n)
	}

	// An address that is not the server's: a server's root that takes
	// another server's address (a stopped one's, the next one's) would
	// receive the host's traffic for it, forwarded connections included.
	const unused = "10.79.0.200"
	inNetns(t, nsA2, "ip addr add "+unused+"/24 dev eth0")
	if conn, err := net.DialTimeout("tcp", unused+":22", 3*time.Second); err == nil {
		conn.Close()
		t.Errorf("a2 took the address %s: the host's connection to it reached a2's sshd", unused)
	}

	// A process of the host that is not root's (a job on a node that is
	// also the servers' host, another account): no connection to servers.
	asNobody := func(script string) string {
		out, _ := exec.Command("setpriv", "--reuid", "3000123", "--regid", "3000123", "--clear-groups", "bash", "-c", script).CombinedOutput()
		return string(out)
	}
	if out := asNobody(tcpProbe(a1, 22, "")); !strings.Contains(out, "refused") {
		t.Errorf("a host process of uid 3000123 reached a1's sshd at %s: %q", a1, out)
	}
	if out, _ := exec.Command("bash", "-c", tcpProbe(a1, 22, "")).CombinedOutput(); !strings.Contains(string(out), "REACHED") {
		t.Errorf("the host's root cannot reach a1's sshd (the test is broken): %q", out)
	}

	// A peer on another network of the host: a veth into a namespace of
	// the test's own.
	peer := peerNetns(t, "hacit-peer", "10.82.0.1", "10.82.0.2")
	if out := inNetns(t, peer, tcpProbe("10.82.0.1", hostPort, "")); !strings.Contains(out, "REACHED") {
		t.Fatalf("the peer cannot reach the host at all (the test is broken): %q", out)
	}
	if out := inNetns(t, peer, tcpProbe(a1, 22, "ip route replace 10.79.0.0/24 via 10.82.0.1;")); !strings.Contains(out, "refused") {
		t.Errorf("a peer outside reached a1's sshd at its private address %s: %q", a1, out)
	}
	inNetns(t, peer, udpSend("127.0.0.1", loPort, strings.ReplaceAll(strings.ReplaceAll(toLoopback, "10.79.0.1", "10.82.0.1"), "eth0", peer+"-p")))
	if n := received(); n != 0 {
		t.Errorf("a peer outside reached the host's 127.0.0.1:%d (%d datagrams)", loPort, n)
	}

	// A forward may not take a port a host service listens on.
	taken := listenHost(t, "127.0.0.1:20090")
	if r := runHac(t, alice, dir, nil, "port-forward", "add", "a1", "--private-port", "22", "--public-port", fmt.Sprint(taken)); r.code == 0 || !strings.Contains(r.stderr, "in use by a service on the host") {
		t.Errorf("a forward on a port the host listens on: %+v", r)
	}
}

// twoTenantsServers makes users alice, with servers a1 and a2 (key pair
// ka, in dir), and bob, with b1 (kb), and returns their environments.
func twoTenantsServers(t *testing.T, c *cluster, dir string) (alice, bob []string) {
	t.Helper()
	alice, bob = c.user("alice"), c.user("bob")
	for _, step := range []struct {
		env  []string
		args []string
	}{
		{alice, []string{"keypair", "create", "ka"}},
		{alice, []string{"server", "create", "a1", "--keypair", "ka", "--image", "host"}},
		{alice, []string{"server", "create", "a2", "--keypair", "ka", "--image", "host"}},
		{bob, []string{"keypair", "create", "kb"}},
		{bob, []string{"server", "create", "b1", "--keypair", "kb", "--image", "host"}},
	} {
		if r := runHac(t, step.env, dir, nil, step.args...); r.code != 0 {
			t.Fatalf("%v: %+v", step.args, r)
		}
	}
	return alice, bob
}

// serverAddr waits for a server to run and returns its private address.
func serverAddr(t *testing.T, env []string, dir, name string) string {
	t.Helper()
	var m string
	eventually(t, 30*time.Second, name+" running", func() bool {
		r := runHac(t, env, dir, nil, "server", "show", name)
		m = regexp.MustCompile(`10\.79\.0\.\d+`).FindString(r.stdout)
		return m != "" && strings.Contains(r.stdout, "running")
	})
	return m
}

// peerNetns makes a network namespace joined to the host by a veth pair,
// hostIP on the host's end and peerIP on the peer's, removed at the end.
func peerNetns(t testing.TB, name, hostIP, peerIP string) string {
	t.Helper()
	hostEnd, peerEnd := name+"-h", name+"-p"
	cleanup := func() {
		exec.Command("ip", "link", "del", hostEnd).Run()
		exec.Command("ip", "netns", "del", name).Run()
	}
	cleanup()
	t.Cleanup(cleanup)
	for _, args := range [][]string{
		{"netns", "add", name},
		{"link", "add", hostEnd, "type", "veth", "peer", "name", peerEnd},
		{"link", "set", peerEnd, "netns", name},
		{"addr", "add", hostIP + "/24", "dev", hostEnd},
		{"link", "set", hostEnd, "up"},
		{"-n", name, "addr", "add", peerIP + "/24", "dev", peerEnd},
		{"-n", name, "link", "set", peerEnd, "up"},
		{"-n", name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	return name
}
