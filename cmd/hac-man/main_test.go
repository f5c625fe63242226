package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestManPages: a page for every command, with its examples (SPEC A13).
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if err := write(dir); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"hac.1", "hac-run.1", "hac-logs.1", "hac-cancel.1", "hac-job-show.1", "hac-firewall-add.1"} {
		raw, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		if !bytes.Contains(raw, []byte(".SH NAME")) || page != "hac.1" && !bytes.Contains(raw, []byte(".SH EXAMPLE")) {
			t.Errorf("%s lacks its name or examples:\n%s", page, raw)
		}
	}
}
