package workspace

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestHashCache: a second walk reads no unchanged file, and reads again a
// file whose content changed even with its size and mtime put back; a
// file written just before its reading is not kept (racy).
func TestHashCache(t *testing.T) {
	root, cache := t.TempDir(), filepath.Join(t.TempDir(), "hashes")
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.py", "print(1)\n")
	write("b.py", "print(2)\n")
	walk := func(racy time.Duration) (map[string]string, []string) {
		t.Helper()
		c := OpenHashCache(cache)
		c.racy = racy
		var read []string
		c.read = func(p string, size int64) (string, error) {
			read = append(read, filepath.Base(p))
			return HashFile(p, size)
		}
		m, err := Walk(root, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Save(); err != nil {
			t.Fatal(err)
		}
		sums := map[string]string{}
		for _, f := range m.Files {
			sums[f.Path] = f.Sha256
		}
		return sums, read
	}
	first, read := walk(time.Hour) // everything is racy: nothing kept
	if len(read) != 2 {
		t.Fatalf("first walk read %v", read)
	}
	if _, read = walk(0); len(read) != 2 {
		t.Errorf("racy entries were kept: the second walk read %v", read)
	}
	again, read := walk(0)
	if len(read) != 0 || !reflect.DeepEqual(again, first) {
		t.Errorf("unchanged: read %v, sums %v (want none read, %v)", read, again, first)
	}
	// Same size, same mtime, new content: the ctime tells.
	info, _ := os.Stat(filepath.Join(root, "a.py"))
	time.Sleep(20 * time.Millisecond) // past the file system clock's tick
	write("a.py", "print(3)\n")
	os.Chtimes(filepath.Join(root, "a.py"), info.ModTime(), info.ModTime())
	changed, read := walk(0)
	if !reflect.DeepEqual(read, []string{"a.py"}) || changed["a.py"] == first["a.py"] || changed["b.py"] != first["b.py"] {
		t.Errorf("after a.py changed: read %v, sums %v", read, changed)
	}
	// A removed file leaves the cache.
	os.Remove(filepath.Join(root, "b.py"))
	walk(0)
	if c := OpenHashCache(cache); len(c.old) != 1 {
		t.Errorf("cache after b.py went: %v", c.old)
	}
	// A cache another user could have written is an empty one.
	os.Chmod(cache, 0o666)
	if _, read = walk(0); len(read) != 1 {
		t.Errorf("with a cache writable by others: read %v", read)
	}
	// A damaged cache is an empty one.
	os.WriteFile(cache, []byte("hac-hashes 1\nnonsense\n"), 0o600)
	if _, read = walk(0); len(read) != 1 {
		t.Errorf("with a damaged cache: read %v", read)
	}
}

// FuzzDecodeHashCache: any bytes decode or fail cleanly, and what decodes
// encodes back to the same entries.
func FuzzDecodeHashCache(f *testing.F) {
	var buf bytes.Buffer
	encodeHashCache(&buf, map[string]hashEntry{"dir/a b.py": {size: 9, mtime: 1, ctime: 2, ino: 3, dev: 1 << 63, sum: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}})
	f.Add(buf.Bytes())
	f.Add([]byte(hashCacheHeader))
	f.Add([]byte("hac-hashes 1\nx 1 2 3 4 5 \"a\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := decodeHashCache(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		encodeHashCache(&out, entries)
		again, err := decodeHashCache(&out)
		if err != nil || !reflect.DeepEqual(again, entries) {
			t.Fatalf("round trip: %v, %v vs %v", err, again, entries)
		}
	})
}
