package cli

import (
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

// serverLayer is where a server made by hac sees its own writable layer
// (vm/local.LayerPath): what its users changed of its image.
var serverLayer = "/.hac/layer"

// homeNotShipped are what of home no job needs and a GPU node should not
// keep: caches of pip and hac, private keys, shell histories.
var homeNotShipped = []string{".cache/hac", ".cache/pip", ".ssh", ".gnupg", ".bash_history", ".zsh_history", ".python_history", ".lesshst"}

// serverFiles is what the server adds to its image, and the folder its
// paths are below.
type serverFiles struct {
	env  *hacv1.Environment
	root string
}

// madeByHac reports whether this machine is a server made by hac (it shows
// its writable layer).
func madeByHac() bool {
	fi, err := os.Stat(serverLayer)
	return err == nil && fi.IsDir()
}

// notShipped are the layer's folders jobs never see: the server's mounts
// and run-time state, hac's own configuration (the server's token), and
// caches of no use to a program.
var notShipped = []string{".hac", "proc", "sys", "dev", "run", "tmp", "var/tmp", "etc/hac"}

// serverEnvironment is what the server adds to its image, for the GPU node
// to run the program on the server's own files (SPEC A7). The workspace
// (cwd) travels on its own and is left out, as is homeNotShipped.
//
// On a machine hac did not make (a registered server that named its base
// image), what the user's environment adds travels instead: the active
// virtualenv and conda prefix, and the user site-packages.
// Its files are read below the folder it returns.
func serverEnvironment(cwd string) (*hacv1.Environment, string, error) {
	skip := &layerFilter{tops: append([]string(nil), notShipped...)}
	if rel := strings.TrimPrefix(cwd, "/"); rel != "" {
		skip.tops = append(skip.tops, rel)
	}
	home, _ := os.UserHomeDir()
	if filepath.IsAbs(home) && home != "/" {
		skip.home = strings.TrimPrefix(filepath.Clean(home), "/")
		for _, p := range homeNotShipped {
			skip.tops = append(skip.tops, skip.home+"/"+p)
		}
		// What the user lists in ~/.hacignore stays too (data sets).
		if f, err := os.Open(filepath.Join(home, ".hacignore")); err == nil {
			skip.ignore = &workspace.Ignore{}
			skip.ignore.AddFile("", f)
			f.Close()
		}
	}
	env := &hacv1.Environment{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Home: home}
	if u, err := user.Current(); err == nil {
		env.User = u.Username
	}
	if madeByHac() {
		layer, err := walkRoot(serverLayer, "", skip)
		env.Layer = layer
		return env, serverLayer, err
	}
	layer, err := userAdditions(home, skip)
	env.Layer = layer
	return env, "/", err
}

// layerFilter says what of the server's files stays behind: tops and what
// is below them, and what the home folder's .hacignore names.
type layerFilter struct {
	tops   []string
	home   string // slash-separated, relative to /
	ignore *workspace.Ignore
}

func (lf *layerFilter) skip(rel string, dir bool) bool {
	if workspace.UnderAny(rel, lf.tops) {
		return true
	}
	if below, ok := strings.CutPrefix(rel, lf.home+"/"); ok && lf.ignore != nil {
		return lf.ignore.Match(below, dir)
	}
	return false
}

// walkRoot walks the folder root, shown at the slash-separated prefix of
// the job's root, with its hash cache.
func walkRoot(root, prefix string, skip *layerFilter) (*hacv1.Manifest, error) {
	var hashes *workspace.HashCache
	if p, err := workspace.HashCachePath(root); err == nil {
		hashes = workspace.OpenHashCache(p)
	}
	m, err := workspace.WalkLayer(root, func(rel string, dir bool) bool { return skip.skip(path.Join(prefix, rel), dir) }, hashes)
	if err != nil {
		return nil, err
	}
	if hashes != nil {
		hashes.Save()
	}
	for _, f := range m.Files {
		f.Path = path.Join(prefix, f.Path)
	}
	return m, nil
}

// userAdditions lists what the user's environment adds to a registered
// machine's base image, with the folders above each part.
func userAdditions(home string, skip *layerFilter) (*hacv1.Manifest, error) {
	var roots []string
	for _, v := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if p := os.Getenv(v); filepath.IsAbs(p) {
			roots = append(roots, filepath.Clean(p))
		}
	}
	if filepath.IsAbs(home) {
		sites, _ := filepath.Glob(filepath.Join(home, ".local/lib/python*"))
		roots = append(roots, sites...)
	}
	m := &hacv1.Manifest{}
	seen := map[string]bool{}
	for _, root := range roots {
		rel := strings.TrimPrefix(root, "/")
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() || rel == "" || seen[rel] || skip.skip(rel, true) {
			continue
		}
		// The folders above it, as they are.
		var above []string
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			above = append([]string{d}, above...)
		}
		for _, d := range append(above, rel) {
			if seen[d] {
				continue
			}
			seen[d] = true
			fi, err := os.Stat("/" + d)
			if err != nil {
				return nil, err
			}
			st := fi.Sys().(*syscall.Stat_t)
			m.Files = append(m.Files, &hacv1.FileEntry{Path: d, Mode: uint32(fs.ModeDir | fi.Mode().Perm()), Uid: st.Uid, Gid: st.Gid, MtimeNs: fi.ModTime().UnixNano()})
		}
		below, err := walkRoot(root, rel, skip)
		if err != nil {
			return nil, err
		}
		for _, f := range below.Files {
			if !seen[f.Path] {
				seen[f.Path] = true
				m.Files = append(m.Files, f)
			}
		}
	}
	return m, nil
}
