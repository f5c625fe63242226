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
