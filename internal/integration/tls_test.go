package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hac-project/hac/internal/pki"
)

// tap is a TCP relay in front of target that keeps every byte that passes,
// both ways: what an eavesdropper on the network would see. It counts the
// connections, and those that did not open, both ways, with a TLS
// handshake record (content type 22).
type tap struct {
	addr          string
	mu            sync.Mutex
	seen          bytes.Buffer
	conns, plains int
}

func newTap(t testing.TB, target string) *tap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tp := &tap{addr: ln.Addr().String()}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			tp.mu.Lock()
			tp.conns++
			tp.mu.Unlock()
			relay := func(dst, src net.Conn) {
				first := make([]byte, 1)
				if _, err := io.ReadFull(src, first); err == nil {
					if first[0] != 22 {
						tp.mu.Lock()
						tp.plains++
						tp.mu.Unlock()
					}
					tp.Write(first)
					dst.Write(first)
					io.Copy(io.MultiWriter(dst, tp), src)
				}
				dst.Close()
				src.Close()
			}
			go relay(out, in)
			go relay(in, out)
		}
	}()
	return tp
}

func (tp *tap) Write(p []byte) (int, error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.seen.Write(p)
}

func (tp *tap) bytes() []byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return bytes.Clone(tp.seen.Bytes())
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestAttackSniffTraffic: an eavesdropper between every party (the admin
// enrolling a node, the agent joining and reporting, a user's hac run and
// the node's worker) sees none of the tokens, the workspace's files, the
// forwarded environment or the program's output.
func TestAttackSniffTraffic(t *testing.T) {
	c := &cluster{t: t, dir: t.TempDir()}
	c.home = filepath.Join(c.dir, "home")
	os.MkdirAll(c.home, 0o755)
	c.startServe()
	api := newTap(t, strings.TrimPrefix(c.addr, "https://"))
	c.addr = "https://" + api.addr // every client and the agent go through it
	port := freePort(t)
	worker := newTap(t, "127.0.0.1:"+port)
	c.agentListen = "127.0.0.1:" + port
	c.agentArgs = []string{"--advertise", worker.addr}
	c.addAgent("node1", "fake:1x80GiB")
	serverToken := c.register("web1", "")

	const mark = "MARK-b3c9e1"
	dir := workdir(t, map[string]string{"secret.txt": "file-" + mark})
	env := append(c.serverEnv(serverToken), "SECRET_MARK=env-"+mark)
	r := c.hac(env, dir, "run", "-e", "SECRET_MARK", "--", "sh", "-c", `cat secret.txt; echo; echo "$SECRET_MARK"; echo "out-$SECRET_MARK" > back.txt`)
	if r.code != 0 || !strings.Contains(r.stdout, "file-"+mark) || !strings.Contains(r.stdout, "env-"+mark) {
		t.Fatalf("hac run through the taps: %+v", r)
	}
	if back, err := os.ReadFile(filepath.Join(dir, "back.txt")); err != nil || !strings.Contains(string(back), mark) {
		t.Fatalf("back.txt: %q %v", back, err)
	}
	join, _ := os.ReadFile(filepath.Join(c.dir, "node1.join"))
	cred := c.nodeCredential("node1")
	secrets := map[string]string{"the admin token": c.creds.AdminToken, "the server token": serverToken,
		"the join token": strings.TrimSpace(string(join)), "the node credential": cred, "the mark": mark}
	for name, tp := range map[string]*tap{"control plane": api, "worker": worker} {
		seen := tp.bytes()
		tp.mu.Lock()
		conns, plains := tp.conns, tp.plains
		tp.mu.Unlock()
		if len(seen) < 1000 || conns == 0 {
			t.Fatalf("the %s tap saw %d bytes in %d connections: the traffic did not pass it", name, len(seen), conns)
		}
		if plains > 0 {
			t.Errorf("%d of %d connections to the %s did not start with TLS", plains, conns, name)
		}
		for what, s := range secrets {
			if s == "" {
				t.Fatalf("%s is empty", what)
			}
			if bytes.Contains(seen, []byte(s)) {
				t.Errorf("%s appears in clear on the way to the %s", what, name)
			}
		}
	}
}

// TestTLSRefusals: a client that pins another CA, that speaks plain HTTP,
// or that is configured with http://, gets no answer it could trust and
// a message that says what to do.
func TestTLSRefusals(t *testing.T) {
	c := newCluster(t)
	other, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := append(c.baseEnv(), "HAC_ADDR="+c.addr, "HAC_CA_PIN="+other.Pin(), "HAC_TOKEN="+c.creds.AdminToken)
	if r := runHac(t, env, "", nil, "nodes"); r.code == 0 || !strings.Contains(r.stderr, "not from the pinned CA") {
		t.Errorf("another CA's pin: %+v", r)
	}
	plain := "http://" + strings.TrimPrefix(c.addr, "https://")
	env = append(c.baseEnv(), "HAC_ADDR="+plain, "HAC_TOKEN="+c.creds.AdminToken)
	if r := runHac(t, env, "", nil, "nodes"); r.code == 0 || !strings.Contains(r.stderr, "speaks TLS only: use https://") {
		t.Errorf("an http:// address: %+v", r)
	}
	resp, err := http.Get(plain + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("/healthz answered over plain HTTP: %q", body)
		}
	}
	r := start(t, c.baseEnv(), c.dir, nil, "agent", "--server", plain, "--gpus", "fake:1x1GiB", "--data-dir", filepath.Join(c.dir, "plain"), "--no-sandbox")
	<-r.done
	if !strings.Contains(r.stderr.String(), "speaks TLS only") {
		t.Errorf("hac agent --server http://: %s", r.stderr.String())
	}
}

// TestOperatorCertificate: hac serve with the operator's own certificate
// (--tls-cert, --tls-key, --tls-ca): clients pin the operator's CA, join
// tokens carry it, and nodes still get worker certificates from hac's CA.
func TestOperatorCertificate(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	dir := t.TempDir()
	files := map[string][]byte{
		"api.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		"api.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := &cluster{t: t, dir: t.TempDir()}
	c.home = filepath.Join(c.dir, "home")
	os.MkdirAll(c.home, 0o755)
	c.serveArgs = []string{"--tls-cert", filepath.Join(dir, "api.crt"), "--tls-key", filepath.Join(dir, "api.key"), "--tls-ca", filepath.Join(dir, "ca.crt")}
	c.startServe()
	if c.pin != ca.Pin() {
		t.Fatalf("hac serve pins %s, want the operator's CA %s", c.pin, ca.Pin())
	}
	c.addAgent("node1", "fake:1x80GiB")
	if r := c.hac(c.serverEnv(c.register("web1", "")), workdir(t, nil), "run", "--", "echo", "over-tls"); r.code != 0 || !strings.Contains(r.stdout, "over-tls") {
		t.Fatalf("hac run with the operator's certificate: %+v", r)
	}
}
