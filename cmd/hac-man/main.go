// Command hac-man writes a man page (section 1) for every hac command into
// a folder, from the same text as the help: go run ./cmd/hac-man DIR. It
// is a program of its own so that hac does not carry a Markdown renderer
// (its package setup costs every hac run time).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra/doc"

	"github.com/hac-project/hac/internal/cli"
	"github.com/hac-project/hac/internal/version"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./cmd/hac-man DIR   (then: man -l DIR/hac-run.1)")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "hac-man:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root := cli.CommandTree()
	root.DisableAutoGenTag = true
	return doc.GenManTree(root, &doc.GenManHeader{Title: "HAC", Section: "1", Source: "hac " + version.Version, Manual: "hac manual"}, dir)
}
