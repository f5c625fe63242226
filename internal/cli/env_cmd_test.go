package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnvReset: hac env reset moves aside the user's packages that hide
// the image's (the package, its .dist-info), keeps the others, and
// deletes nothing; --packages moves them all.
func TestEnvReset(t *testing.T) {
	image, home := t.TempDir(), t.TempDir()
	old := imagePackages
	imagePackages = image
	t.Cleanup(func() { imagePackages = old })
	os.MkdirAll(filepath.Join(image, "torch"), 0o755)
	os.WriteFile(filepath.Join(image, "six.py"), nil, 0o644)
	os.MkdirAll(filepath.Join(image, "__pycache__"), 0o755)
	site := filepath.Join(home, ".local/lib/python3.11/site-packages")
	for _, p := range []string{"torch/version.py", "torch-9.9.9.dist-info/METADATA", "mine/__init__.py", "six.py", "__pycache__/mine.pyc"} {
		os.MkdirAll(filepath.Dir(filepath.Join(site, p)), 0o755)
		os.WriteFile(filepath.Join(site, p), []byte("__version__ = '9.9.9'\n"), 0o644)
	}
	var out bytes.Buffer
	a := &app{stdout: &out, stderr: &out}
	if err := a.envReset(home, false); err != nil {
		t.Fatal(err)
	}
	left, _ := os.ReadDir(site)
	if len(left) != 2 || left[0].Name() != "__pycache__" || left[1].Name() != "mine" {
		t.Errorf("left %v, want __pycache__ and mine\n%s", left, out.String())
	}
	moved, _ := filepath.Glob(filepath.Join(home, ".local/share/hac/env-reset-*/.local/lib/python3.11/site-packages/*"))
	if len(moved) != 3 || !strings.Contains(out.String(), "To undo") {
		t.Errorf("moved %v\n%s", moved, out.String())
	}
	out.Reset()
	if err := a.envReset(home, true); err != nil || !strings.Contains(out.String(), "mine") {
		t.Errorf("--packages: %v %s", err, out.String())
	}
	out.Reset()
	if err := a.envReset(home, false); err != nil || !strings.Contains(out.String(), "Nothing to reset") {
		t.Errorf("again: %v %s", err, out.String())
	}
}
