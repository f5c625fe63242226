package cli

import (
	"strings"
	"testing"

	"github.com/hac-project/hac/internal/workspace"
)

// TestLayerFilter: the server's files leave behind the sandbox's own
// folders, the workspace, private keys and caches, and what ~/.hacignore
// names (a data set, checkpoints), below home only.
func TestLayerFilter(t *testing.T) {
	ig := workspace.ParseIgnore(strings.NewReader("data/\n*.ckpt\n"))
	lf := &layerFilter{tops: []string{"tmp", "home/u/proj", "home/u/.ssh"}, home: "home/u", ignore: ig}
	for rel, dir := range map[string]bool{"tmp/x": false, "home/u/proj": true, "home/u/.ssh/id_ed25519": false,
		"home/u/data": true, "home/u/run/model.ckpt": false} {
		if !lf.skip(rel, dir) {
			t.Errorf("%s: shipped", rel)
		}
	}
	for rel, dir := range map[string]bool{"home/u/.local/lib/python3.11/site-packages/m.py": false, "home/u/data": false,
		"opt/data": true, "usr/model.ckpt": false, "home/u": true} {
		if lf.skip(rel, dir) {
			t.Errorf("%s: left behind", rel)
		}
	}
}
