package cli

import (
	"os"
	"path/filepath"
	"strings"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/workspace"
)

// serverLayer is where a server made by hac sees its own writable layer
// (vm/local.LayerPath): what its users changed of its image.
var serverLayer = "/.hac/layer"

// notShipped are the layer's folders jobs never see: the server's mounts
// and run-time state, hac's own configuration (the server's token), and
// caches of no use to a program.
var notShipped = []string{".hac", "proc", "sys", "dev", "run", "tmp", "var/tmp", "etc/hac"}

// serverEnvironment is what the server adds to its image, for the GPU node
// to run the program on the server's own files (SPEC A7): nil on a machine
// hac did not make. The workspace (cwd) travels on its own and is left
// out, as are caches of pip and hac under home.
func serverEnvironment(cwd string) (*hacv1.Environment, error) {
	if fi, err := os.Stat(serverLayer); err != nil || !fi.IsDir() {
		return nil, nil
	}
	skip := append([]string(nil), notShipped...)
	if rel := strings.TrimPrefix(cwd, "/"); rel != "" {
		skip = append(skip, rel)
	}
	if home, err := os.UserHomeDir(); err == nil && filepath.IsAbs(home) && home != "/" {
		h := strings.TrimPrefix(filepath.Clean(home), "/")
		skip = append(skip, h+"/.cache/hac", h+"/.cache/pip")
	}
	var hashes *workspace.HashCache
	if p, err := workspace.HashCachePath(serverLayer); err == nil {
		hashes = workspace.OpenHashCache(p)
	}
	m, err := workspace.WalkLayer(serverLayer, func(rel string) bool { return workspace.UnderAny(rel, skip) }, hashes)
	if err != nil {
		return nil, err
	}
	if hashes != nil {
		hashes.Save()
	}
	return &hacv1.Environment{Layer: m, Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}, nil
}
