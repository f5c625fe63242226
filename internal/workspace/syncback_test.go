package workspace

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
	s, err := NewSyncBack(dir, &hacv1.Manifest{}, "7")
	if err != nil {
		t.Fatal(err)
	}
	file := func(path string, data string) error {
		return s.Receive(&hacv1.ChangedFile{Path: path, Mode: 0o644, Data: []byte(data), First: true, Last: true})
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"git hook", file(".git/hooks/post-checkout", "#!/bin/sh\necho owned")},
		{"nested .git", file("sub/.git/config", "x")},
		{"through a symlink out", file("out/planted", "x")},
		{"absolute symlink", s.Receive(&hacv1.ChangedFile{Path: "passwd", Link: "/etc/passwd", First: true, Last: true})},
		{"relative symlink out", s.Receive(&hacv1.ChangedFile{Path: "a/up", Link: "../../x", First: true, Last: true})},
		{"a symlink into .git", s.Receive(&hacv1.ChangedFile{Path: "g", Link: ".git", First: true, Last: true})},
		{".GIT on a case-blind disk", file(".GIT/hooks/pre-commit", "x")},
		// A chain of links that each look inside: a/b -> .. then s -> a/b/..
		{"a link up", s.Receive(&hacv1.ChangedFile{Path: "a/b", Link: "..", First: true, Last: true})},
		{"a chain up", s.Receive(&hacv1.ChangedFile{Path: "s", Link: "a/b/..", First: true, Last: true})},
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
	// Nothing is written through a symlink, even one inside.
	if err := s.Receive(&hacv1.ChangedFile{Path: "ok/sub/x", Mode: 0o644, Data: []byte("x"), First: true, Last: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Receive(&hacv1.ChangedFile{Path: "via", Link: "ok/sub", First: true, Last: true}); err != nil {
		t.Fatal(err)
	}
	if err := file("via/planted", "x"); err == nil {
		t.Errorf("a file was written through a symlink")
	}
	// Inside the folder all is fine.
	if err := file("ok/model.bin", "weights"); err != nil {
		t.Fatal(err)
	}
	if err := s.Receive(&hacv1.ChangedFile{Path: "ok/latest", Link: "model.bin", First: true, Last: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ok", "latest")); string(got) != "weights" {
		t.Errorf("ok/latest = %q", got)
	}
	// A file whose last chunk never comes leaves no trace.
	s.Receive(&hacv1.ChangedFile{Path: "half.bin", Mode: 0o644, Data: []byte("part"), First: true})
	s.Finish()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "ok" && e.Name() != "out" && e.Name() != "via" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
