package workspace

import (
	"bufio"
	"io"
	"path"
	"strings"
)

// Ignore is a list of gitignore-style patterns: "*.ckpt", "data/",
// "/build", "logs/**", "!keep.txt". The last matching pattern wins, so
// that the patterns of a folder's own ignore file, added after its
// parents', take precedence, as git's do.
type Ignore struct {
	rules []rule
}

type rule struct {
	pattern  string
	negate   bool
	dirOnly  bool
	anchored bool // contains a slash: matched against the whole path
	// base is the folder (slash-separated, relative) whose ignore file
	// the pattern is from: it applies below it, relative to it.
	base string
}

// ParseIgnore reads patterns, one per line; blank lines and # comments are
// skipped.
func ParseIgnore(r io.Reader) *Ignore {
	ig := &Ignore{}
	s := bufio.NewScanner(r)
	for s.Scan() {
		ig.Add(s.Text())
	}
	return ig
}

// AddFile adds the patterns of an ignore file in folder base (relative,
// slash-separated; "" for the root).
func (ig *Ignore) AddFile(base string, r io.Reader) {
	for _, rl := range ParseIgnore(r).rules {
		rl.base = base
		ig.rules = append(ig.rules, rl)
	}
}

// Add adds one pattern line.
func (ig *Ignore) Add(line string) {
	line = strings.TrimRight(line, " \t\r")
	if line == "" || strings.HasPrefix(line, "#") {
		return
	}
	var r rule
	if strings.HasPrefix(line, "!") {
		r.negate, line = true, line[1:]
	}
	if strings.HasSuffix(line, "/") {
		r.dirOnly, line = true, strings.TrimSuffix(line, "/")
	}
	if strings.Contains(line, "/") {
		r.anchored = true
		line = strings.TrimPrefix(line, "/")
	}
	if line == "" {
		return
	}
	r.pattern = line
	ig.rules = append(ig.rules, r)
}

// Match reports whether the slash-separated relative path is ignored.
func (ig *Ignore) Match(p string, isDir bool) bool {
	ignored := false
	for _, r := range ig.rules {
		if r.dirOnly && !isDir {
			continue
		}
		rel := p
		if r.base != "" {
			var below bool
			if rel, below = strings.CutPrefix(p, r.base+"/"); !below {
				continue
			}
		}
		if r.matches(rel) {
			ignored = !r.negate
		}
	}
	return ignored
}

func (r rule) matches(p string) bool {
	if !r.anchored {
		return globMatch(r.pattern, path.Base(p))
	}
	return globMatch(r.pattern, p)
}

// globMatch matches a pattern where "**" spans directories and other
// wildcards stay within one path element.
func globMatch(pattern, name string) bool {
	if !strings.Contains(pattern, "**") {
		ok, _ := path.Match(pattern, name)
		return ok
	}
	pp, np := strings.Split(pattern, "/"), strings.Split(name, "/")
	var match func(i, j int) bool
	match = func(i, j int) bool {
		for i < len(pp) {
			if pp[i] == "**" {
				for k := j; k <= len(np); k++ {
					if match(i+1, k) {
						return true
					}
				}
				return false
			}
			if j >= len(np) {
				return false
			}
			if ok, _ := path.Match(pp[i], np[j]); !ok {
				return false
			}
			i, j = i+1, j+1
		}
		return j == len(np)
	}
	return match(0, 0)
}
