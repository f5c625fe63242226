package controlplane

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/store"
)

// TestObservability: /metrics has the runtime's, the process's, the API's
// per-procedure latencies, the store's commits and the jobs' starts and
// ends; /metrics and /debug/pprof answer an admin only.
func TestObservability(t *testing.T) {
	url, toks, s := testPlane(t, store.Normal, 1, 1)
	acc := hacv1connect.NewAcceleratorServiceClient(apiclient.New(s.Pin()), url, connect.WithInterceptors(apiclient.Bearer(toks[0])))
	if err := cycle(context.Background(), acc); err != nil {
		t.Fatal(err)
	}
	creds, err := s.Bootstrap(t.Context(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, tok string) (int, string) {
		req, _ := http.NewRequest("GET", url+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := apiclient.New(s.Pin()).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/metrics", toks[0]); code != 403 {
		t.Errorf("/metrics for a server token: %d, want 403", code)
	}
	_, m := get("/metrics", creds.AdminToken)
	for _, want := range []string{
		"go_goroutines", "process_resident_memory_bytes",
		`hac_api_request_duration_seconds_count{code="ok",procedure="/hac.v1.AcceleratorService/Allocate"} 1`,
		`hac_api_request_duration_seconds_count{code="ok",procedure="/hac.v1.AcceleratorService/Release"} 1`,
		"hac_store_commit_seconds_count", "hac_store_commit_changes_bucket",
		"hac_jobs_started_total 1", `hac_jobs_ended_total{state="completed"} 1`,
		`hac_metered_seconds_total{charged="true",item="small.16gb",kind="model"}`, `hac_held_gpu_seconds_total{model="small.16gb"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, c := range []struct {
		tok  string
		code int
	}{{"", 401}, {"nonsense", 401}, {toks[0], 403}, {creds.AdminToken, 200}} {
		if code, body := get("/debug/pprof/", c.tok); code != c.code || (code == 200 && !strings.Contains(body, "goroutine")) {
			t.Errorf("/debug/pprof/ with token %.8q: %d, want %d", c.tok, code, c.code)
		}
	}
}
