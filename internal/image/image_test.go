package image

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleTree(t *testing.T) string {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(root, "usr/bin/tool"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool2")))
	must(os.Symlink("usr/bin", filepath.Join(root, "bin")))
	must(os.WriteFile(filepath.Join(root, "secret"), []byte("x"), 0o600))
	old := time.Unix(1_700_000_000, 0)
	must(os.Chtimes(filepath.Join(root, "usr/bin/tool"), old, old))
	return root
}

func TestWriteUnpackRoundTrip(t *testing.T) {
	src := sampleTree(t)
	d1, err := Digest(src)
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := Digest(src); d1 != d2 || !ValidDigest(d1) {
		t.Fatalf("digests %s and %s: want equal and valid", d1, d2)
	}
	var buf bytes.Buffer
	if err := Write(src, &buf); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "root")
	if err := Unpack(bytes.NewReader(buf.Bytes()), d1, dst); err != nil {
		t.Fatal(err)
	}
	if d3, err := Digest(dst); err != nil || d3 != d1 {
		t.Fatalf("the unpacked tree's digest is %s (%v), want %s", d3, err, d1)
	}
	fi, err := os.Stat(filepath.Join(dst, "usr/bin/tool"))
	if err != nil || fi.Mode().Perm() != 0o755 || !fi.ModTime().Equal(time.Unix(1_700_000_000, 0)) {
		t.Fatalf("tool: %v %v", fi, err)
	}
	a, _ := os.Stat(filepath.Join(dst, "usr/bin/tool"))
	b, _ := os.Stat(filepath.Join(dst, "usr/bin/tool2"))
	if !os.SameFile(a, b) {
		t.Error("a hard link came out as two files")
	}
	if l, _ := os.Readlink(filepath.Join(dst, "bin")); l != "usr/bin" {
		t.Errorf("bin -> %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "secret")); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret: %v", fi)
	}
}

func TestUnpackRefusals(t *testing.T) {
	src := sampleTree(t)
	var good bytes.Buffer
	Write(src, &good)
	digest, _ := Digest(src)
	tampered := bytes.Replace(good.Bytes(), []byte("echo hi"), []byte("echo ha"), 1)
	evil := func(hdrs ...*tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hdrs {
			tw.WriteHeader(h)
			if h.Size > 0 {
				tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		tw.Close()
		return b.Bytes()
	}
	for name, tc := range map[string]struct {
		stream []byte
		digest string
		want   string
	}{
		"tampered":      {tampered, digest, "digest is"},
		"not a digest":  {good.Bytes(), "sha256:xyz", "not a digest"},
		"dot-dot":       {evil(&tar.Header{Name: "../x", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}), digest, "bad path"},
		"absolute":      {evil(&tar.Header{Name: "/etc/x", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}), digest, "bad path"},
		"through links": {evil(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, &tar.Header{Name: "l/x", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}), digest, "escapes"},
		"device":        {evil(&tar.Header{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666}), digest, "not made"},
	} {
		dst := filepath.Join(t.TempDir(), "root")
		err := Unpack(bytes.NewReader(tc.stream), tc.digest, dst)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
		if _, serr := os.Stat(dst); serr == nil {
			t.Errorf("%s: the partial tree was left behind", name)
		}
	}
}

// FuzzUnpack: a stream from the network never writes outside its folder
// nor panics.
func FuzzUnpack(f *testing.F) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644})
	tw.Write([]byte("hi"))
	tw.Close()
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, stream []byte) {
		base := t.TempDir()
		Unpack(bytes.NewReader(stream), DigestPrefix+strings.Repeat("0", 64), filepath.Join(base, "root"))
		entries, _ := os.ReadDir(base)
		if len(entries) > 0 {
			t.Fatalf("left %v beside a refused stream", entries)
		}
	})
}
