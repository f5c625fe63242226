package controlplane

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/store"
)

// TestGarbageInput sends malformed and hostile bodies to every procedure,
// with every kind of token, and checks that the control plane answers each
// with a client error and stays healthy.
func TestGarbageInput(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 2, 1)
	creds, err := s.Bootstrap(t.Context(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	nodeToken, err := s.EnrollNode(t.Context(), "n", "")
	if err != nil {
		t.Fatal(err)
	}
	httpc := apiclient.New(s.Pin())
	procs := []string{
		"/hac.v1.AcceleratorService/Allocate", "/hac.v1.AcceleratorService/RenewLease", "/hac.v1.AcceleratorService/Release",
		"/hac.v1.AcceleratorService/GetAccelerator", "/hac.v1.AcceleratorService/SwitchModel", "/hac.v1.AcceleratorService/ResetAccelerator",
		"/hac.v1.PoolService/ListJobs", "/hac.v1.ServerService/RegisterServer", "/hac.v1.AgentService/RegisterNode",
		"/hac.v1.AgentService/Heartbeat", "/hac.v1.AgentService/JobEnded", "/hac.v1.AgentService/Join",
		"/hac.v1.PoolService/AddNode", "/hac.v1.PoolService/RemoveNode", "/hac.v1.PoolService/DrainNode",
	}
	bodies := []string{
		``, `{`, `null`, `[]`, `{"jobId":"-1"}`, `{"jobId":"99999999999999999999"}`, `{"jobId":"abc"}`,
		`{"model":"` + strings.Repeat("x", 100000) + `"}`, `{"name":"../../etc"}`, `{"server":"nope"}`,
		`{"protocolVersion":1,"name":"n","address":"nohost","gpus":[]}`,
		`{"protocolVersion":1,"name":"n2","address":"h:1","gpus":[{"uuid":"GPU-1","memoryMib":"-5"}]}`,
		`{"protocolVersion":1,"name":"n3","address":"h:1","gpus":[{"uuid":"GPU-x","memoryMib":"1"},{"uuid":"GPU-x","memoryMib":"1"}]}`,
		`{"limit":-1}`, `{"limit":2000000}`, `{"priority":1000,"hasPriority":true,"command":["x"]}`, `{"command":[]}`,
		`{"jobs":[{"jobId":"x"}]}`,
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20; i++ {
		b := make([]byte, r.IntN(64))
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		bodies = append(bodies, string(b))
	}
	for _, proc := range procs {
		for _, tok := range []string{"", "garbage", toks[0], creds.AdminToken, nodeToken} {
			for _, body := range bodies {
				req, _ := http.NewRequest("POST", url+proc, bytes.NewReader([]byte(body)))
				req.Header.Set("Content-Type", "application/json")
				if tok != "" {
					req.Header.Set("Authorization", "Bearer "+tok)
				}
				resp, err := httpc.Do(req)
				if err != nil {
					t.Fatalf("%s %q: %v", proc, body, err)
				}
				resp.Body.Close()
				if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
					t.Errorf("%s with %q: status %d", proc, body[:min(len(body), 60)], resp.StatusCode)
				}
			}
		}
	}
	resp, err := httpc.Get(url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("unhealthy after garbage: %v %v", resp, err)
	}
}
