package integration

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hac-project/hac/internal/apiclient"
)

// The attacks here come from outside any tenant: a peer with no token, or
// one that floods. Limits come before work (docs/SECURITY.md).

// rssMiB is a process's resident memory.
func rssMiB(t testing.TB, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(raw)
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb >> 10
}

// zeros is an endless reader of zero bytes, capped by io.LimitReader.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// agentAddr is a node agent's worker address, from its log.
func agentAddr(t testing.TB, p *proc) string {
	m := regexp.MustCompile(`address=(\S+)`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("no agent address in %q", p.stderr.String())
	}
	return m[1]
}

// attacker is an HTTP client that trusts any certificate, as an attacker's
// would.
func attacker(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
}

// post sends body to url and returns the status and the start of the
// answer (0 when the server hung up first, as it may on a refused body).
func post(t testing.TB, url string, body io.Reader, header map[string]string) (int, string) {
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := attacker(time.Minute).Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(answer)
}

func healthy(t testing.TB, c *cluster) {
	t.Helper()
	h := apiclient.New(c.pin)
	h.Timeout = 10 * time.Second
	resp, err := h.Get(c.addr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz: %s", resp.Status)
	}
}

// TestAttackUnauthenticatedHugeBody: 1 GiB bodies with no token, to the
// control plane and to an agent, are refused before they are read.
func TestAttackUnauthenticatedHugeBody(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	serve, agent := c.serve.cmd.Process.Pid, c.agents[0].cmd.Process.Pid
	before := map[int]int64{serve: rssMiB(t, serve), agent: rssMiB(t, agent)}
	huge := func() io.Reader { return io.LimitReader(zeros{}, 1<<30) }
	if code, answer := post(t, c.addr+"/hac.v1.ServerService/ListServers", huge(), map[string]string{"Content-Type": "application/json"}); code != 0 && code != 401 {
		t.Errorf("control plane answered %d to an unauthenticated 1 GiB body: %.200q", code, answer)
	}
	// A stream's error comes in its body (Connect's end-of-stream message).
	if code, answer := post(t, "https://"+agentAddr(t, c.agents[0])+"/hac.v1.WorkerService/Exec", huge(),
		map[string]string{"Content-Type": "application/connect+proto"}); code != 0 && !strings.Contains(answer, "permission_denied") {
		t.Errorf("agent answered %d to a 1 GiB body without a ticket: %.200q", code, answer)
	}
	for pid, was := range before {
		if grew := rssMiB(t, pid) - was; grew > 100 {
			t.Errorf("process %d grew by %d MiB", pid, grew)
		}
	}
	healthy(t, c)
}

// TestAttackGzipBomb: a small gzip body that inflates to 1 GiB, sent with a
// valid token, stops at the message size limit; sent to an agent with a
// forged ticket, it is not read at all.
func TestAttackGzipBomb(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	// One gzip member of 8 MiB of zeros, repeated: gzip readers read
	// concatenated members as one stream.
	var member, bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	io.Copy(zw, io.LimitReader(zeros{}, 8<<20))
	zw.Close()
	for i := 0; i < 128; i++ {
		bomb.Write(member.Bytes())
	}
	t.Logf("gzip bomb: %d KiB inflating to 1 GiB", bomb.Len()>>10)
	serve := c.serve.cmd.Process.Pid
	before := rssMiB(t, serve)
	code, answer := post(t, c.addr+"/hac.v1.ServerService/ListServers", bytes.NewReader(bomb.Bytes()), map[string]string{
		"Content-Type": "application/proto", "Content-Encoding": "gzip", "Authorization": "Bearer " + c.creds.AdminToken})
	if code == 200 || !strings.Contains(answer, "larger than configured max") {
		t.Errorf("the control plane answered %d to a 1 GiB message: %.200q", code, answer)
	}
	if grew := rssMiB(t, serve) - before; grew > 100 {
		t.Errorf("the control plane grew by %d MiB", grew)
	}
	// The same bomb to a node's worker API, with a forged ticket.
	agent := c.agents[0].cmd.Process.Pid
	before = rssMiB(t, agent)
	code, answer = post(t, "https://"+agentAddr(t, c.agents[0])+"/hac.v1.WorkerService/Exec", bytes.NewReader(bomb.Bytes()), map[string]string{
		"Content-Type": "application/connect+proto", "Connect-Content-Encoding": "gzip", "Hac-Ticket": "forged"})
	if code != 0 && !strings.Contains(answer, "permission_denied") {
		t.Errorf("the agent answered %d to a gzip bomb with a forged ticket: %.200q", code, answer)
	}
	if grew := rssMiB(t, agent) - before; grew > 100 {
		t.Errorf("the agent grew by %d MiB", grew)
	}
	healthy(t, c)
}

// TestAttackHalfSentRequests: thousands of idle connections from one
// address, half of them stopped inside the TLS handshake and half with a
// half-sent request after it, take neither the control plane's
// descriptors nor /healthz from everyone else.
func TestAttackHalfSentRequests(t *testing.T) {
	c := newCluster(t, "fake:1x80GiB")
	addr := strings.TrimPrefix(c.addr, "https://")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	var conns []net.Conn
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for i := 0; i < 4000; i++ {
		cn, err := d.Dial("tcp", addr)
		if err != nil {
			continue // refused or reset: fine
		}
		conns = append(conns, cn)
		if i%2 == 0 {
			cn.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // the start of a ClientHello
			continue
		}
		tc := tls.Client(cn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() == nil {
			tc.Write([]byte("POST /hac.v1.ServerService/ListServers HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"))
		}
	}
	healthy(t, c)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.serve.cmd.Process.Pid))
	if len(fds) > 1000 {
		t.Errorf("the control plane holds %d descriptors under the flood", len(fds))
	}
	if r := c.hac(nil, "", "nodes"); r.code != 0 {
		t.Errorf("hac nodes under the flood: %+v", r)
	}
}
