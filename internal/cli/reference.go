package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/workspace"
)

func (a *app) referenceModelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "reference-model", Short: "List and fetch ready-to-train reference models"}
	list := a.listCmd("list", "List the reference models", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.Catalog.ListReferenceModels(cmd.Context(), connect.NewRequest(&hacv1.ListReferenceModelsRequest{}))
		if err != nil {
			return output.Table{}, nil, err
		}
		t := output.Table{Header: []string{"NAME", "TRAIN WITH", "DESCRIPTION"}}
		for _, m := range resp.Msg.Models {
			t.Rows = append(t.Rows, []string{m.Name, m.Command, m.Description})
		}
		return t, resp.Msg, nil
	})
	var dir string
	get := &cobra.Command{
		Use:   "get NAME [--dir DIR]",
		Short: "Write a reference model's code into DIR/NAME",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Catalog.GetReferenceModel(cmd.Context(), connect.NewRequest(&hacv1.GetReferenceModelRequest{Name: args[0]}))
			if err != nil {
				return err
			}
			m := resp.Msg.Model
			root := filepath.Join(dir, m.Name)
			if _, err := os.Lstat(root); err == nil {
				return fmt.Errorf("%s already exists: remove it or choose another --dir", root)
			}
			for _, f := range m.Files {
				p, err := workspace.SafeJoin(root, f.Path)
				if err != nil {
					return err
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(p, f.Data, 0o644); err != nil {
					return err
				}
			}
			fmt.Fprintf(a.stdout, "%s is in %s (%d files). Train it with: cd %s && %s\n", m.Name, root, len(m.Files), root, m.Command)
			return nil
		},
	}
	get.Flags().StringVar(&dir, "dir", ".", "folder to write NAME/ into")
	cmd.AddCommand(list, get)
	return cmd
}
