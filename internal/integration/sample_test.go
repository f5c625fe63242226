package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// systemPython is Debian's interpreter, where python3-torch installs.
const systemPython = "/usr/bin/python3"

// TestSampleTrainsSameAsLocally covers issue point 9: the sample program
// prints the same losses through hac run as when run locally.
func TestSampleTrainsSameAsLocally(t *testing.T) {
	if err := exec.Command(systemPython, "-c", "import torch").Run(); err != nil {
		t.Skipf("%s cannot import torch (install python3-torch): %v", systemPython, err)
	}
	_, file, _, _ := runtime.Caller(0)
	sample := filepath.Join(filepath.Dir(file), "..", "..", "examples", "sample", "train.py")
	src, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	dir := workdir(t, map[string]string{"train.py": string(src)})
	args := []string{"train.py", "--samples", "1920", "--save", "model.pt"}
	cmd := exec.Command(systemPython, args...)
	cmd.Dir = dir
	local, err := cmd.Output()
	if err != nil {
		t.Fatalf("local run: %v", err)
	}
	os.Remove(filepath.Join(dir, "model.pt"))
	c := newCluster(t, "fake:1x80GiB")
	tok := c.register("web1", "")
	r := runHac(t, c.serverEnv(tok), dir, nil, append([]string{"run", "--", systemPython}, args...)...)
	if r.code != 0 {
		t.Fatalf("hac run: %+v", r)
	}
	losses := regexp.MustCompile(`(?m)^loss: .*$`)
	want, got := losses.FindAllString(string(local), -1), losses.FindAllString(r.stdout, -1)
	if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("losses differ:\nlocal:\n%s\nhac run:\n%s", local, r.stdout)
	}
	if !strings.Contains(r.stdout, "HAC_ACCELERATOR_MODEL=small.16gb") {
		t.Errorf("the program did not see its accelerator model: %s", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.pt")); err != nil {
		t.Errorf("the trained weights did not come back: %v", err)
	}
}
