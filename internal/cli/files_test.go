package cli

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// TestSyncBackStaysInside: files from the node never land under .git/,
// through a symlink out of the folder, or as a symlink pointing out of it;
// a file cut off midway leaves nothing behind.
func TestSyncBackStaysInside(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	os.Symlink(outside, filepath.Join(dir, "out"))
	s, err := newSyncBack(dir, &hacv1.Manifest{}, "7")
	if err != nil {
		t.Fatal(err)
	}
	file := func(path string, data string) error {
		return s.receive(&hacv1.ChangedFile{Path: path, Mode: 0o644, Data: []byte(data), First: true, Last: true})
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"git hook", file(".git/hooks/post-checkout", "#!/bin/sh\necho owned")},
		{"nested .git", file("sub/.git/config", "x")},
		{"through a symlink out", file("out/planted", "x")},
		{"absolute symlink", s.receive(&hacv1.ChangedFile{Path: "passwd", Link: "/etc/passwd", First: true, Last: true})},
		{"relative symlink out", s.receive(&hacv1.ChangedFile{Path: "a/up", Link: "../../x", First: true, Last: true})},
	} {
		if c.err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".git")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".git was made: %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("a file landed outside: %v", entries)
	}
	// Inside the folder all is fine.
	if err := file("ok/model.bin", "weights"); err != nil {
		t.Fatal(err)
	}
	if err := s.receive(&hacv1.ChangedFile{Path: "ok/latest", Link: "model.bin", First: true, Last: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ok", "latest")); string(got) != "weights" {
		t.Errorf("ok/latest = %q", got)
	}
	// A file whose last chunk never comes leaves no trace.
	s.receive(&hacv1.ChangedFile{Path: "half.bin", Mode: 0o644, Data: []byte("part"), First: true})
	s.finish()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "ok" && e.Name() != "out" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
