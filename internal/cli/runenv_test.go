package cli

import (
	"slices"
	"strings"
	"testing"
)

func TestForwardedEnvIsAnAllowlist(t *testing.T) {
	here := []string{"LANG=C.UTF-8", "LC_ALL=C", "TERM=xterm", "TZ=Asia/Seoul", "PYTHONPATH=/x", "OMP_NUM_THREADS=4",
		"GITHUB_PAT=ghp_x", "DATABASE_URL=postgres://u:p@h/db", "OPENAI_KEY=sk-x", "AWS_SECRET_ACCESS_KEY=y", "HOME=/home/u",
		"PYTHON_API_TOKEN=t", "RUN=1"}
	got, err := forwardedEnv(here, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"LANG=C.UTF-8", "LC_ALL=C", "OMP_NUM_THREADS=4", "PYTHONPATH=/x", "TERM=xterm", "TZ=Asia/Seoul"}
	if !slices.Equal(got, want) {
		t.Fatalf("forwarded %q, want %q", got, want)
	}
	got, err = forwardedEnv(here, []string{"OPENAI_KEY", "RUN_NAME=baseline", "PYTHON_API_TOKEN"})
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range []string{"OPENAI_KEY=sk-x", "RUN_NAME=baseline", "PYTHON_API_TOKEN=t"} {
		if !slices.Contains(got, kv) {
			t.Errorf("-e did not forward %s: %q", kv, got)
		}
	}
	for _, bad := range []string{"1X", "A-B", "PATH", "HAC_TOKEN=x", "NOT_SET_ANYWHERE", "LD_PRELOAD=/x.so"} {
		if _, err := forwardedEnv(here, []string{bad}); err == nil || !strings.Contains(err.Error(), "-e") {
			t.Errorf("-e %s: err = %v, want a refusal", bad, err)
		}
	}
}
