package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hac-project/hac/internal/version"
)

// TestVersionFlag: hac --version prints this binary's version and needs no
// control plane.
func TestVersionFlag(t *testing.T) {
	var out, errs bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errs, getenv: func(string) string { return "" }, ctx: context.Background()}
	if code := a.main([]string{"hac", "--version"}); code != 0 || out.String() != "Client Version: "+version.Version+"\n" {
		t.Fatalf("hac --version: exit %d, %q, %q", code, out.String(), errs.String())
	}
}

// TestMistypedCommand: a mistyped command is a usage error that suggests
// the commands it is close to.
func TestMistypedCommand(t *testing.T) {
	var out, errs bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errs, getenv: func(string) string { return "" }, ctx: context.Background()}
	if code := a.main([]string{"hac", "qeue"}); code != 2 || !strings.Contains(errs.String(), "did you mean queue?") {
		t.Fatalf("hac qeue: exit %d, %q", code, errs.String())
	}
	errs.Reset()
	if code := a.main([]string{"hac", "completion", "bash"}); code != 0 || !strings.Contains(out.String(), "bash completion") {
		t.Fatalf("hac completion bash: exit %d, %q", code, errs.String())
	}
}
