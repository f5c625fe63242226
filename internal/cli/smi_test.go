package cli

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(p, got, 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestSMIIdleMatchesSpec(t *testing.T) {
	var b bytes.Buffer
	drawSMI(&b, &hacv1.Accelerator{DisplayName: "HAC AI Accelerator", Token: "ZXhhbXBsZSB0b2tlbiBzdHI=", Model: "small.16gb", MemoryMib: 16384}, "0.1.0", "0.1.0")
	golden(t, "smi-idle.golden", b.Bytes())
}

func TestSMIRunning(t *testing.T) {
	var b bytes.Buffer
	drawSMI(&b, &hacv1.Accelerator{DisplayName: "HAC AI Accelerator", Token: "ZXhhbXBsZSB0b2tlbiBzdHI=", Model: "small.16gb", MemoryMib: 16368,
		Job: &hacv1.Job{Id: "5000", ClientPid: 10000, Command: "python test.py", UsedMib: 320}}, "0.1.0", "0.1.0")
	golden(t, "smi-running.golden", b.Bytes())
}
