package workspace

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrBadPath is returned for a path that is absolute, escapes its root, or
// is otherwise unsafe.
var ErrBadPath = errors.New("workspace: unsafe path")

// CleanPath checks a slash-separated relative path from the network and
// returns it cleaned.
func CleanPath(p string) (string, error) {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || strings.Contains(p, "\\") {
		return "", fmt.Errorf("%w %q", ErrBadPath, p)
	}
	c := path.Clean(p)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") || c != p {
		return "", fmt.Errorf("%w %q", ErrBadPath, p)
	}
	return c, nil
}

// validHash reports whether s looks like a hex SHA-256.
func validHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
