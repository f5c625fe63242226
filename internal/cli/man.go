package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/hac-project/hac/internal/version"
)

func (a *app) manCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "man DIR",
		Short: "Write a man page for every command into DIR",
		Long: `Write a man page (section 1) for every command into DIR, from the same
text as the help: hac.1, hac-run.1, hac-logs.1 and so on.`,
		Example: `  hac man /usr/local/share/man/man1 && man hac-run
  hac man ./man && man -l man/hac-cancel.1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			header := &doc.GenManHeader{Title: "HAC", Section: "1", Source: "hac " + version.Version, Manual: "hac manual"}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "[info] Man pages written into %s.\n", args[0])
			return nil
		},
	}
}
