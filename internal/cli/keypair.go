package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
)

func (a *app) keypairCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keypair", Short: "Create, import, list and delete SSH key pairs for your servers"}
	var ppk bool
	var typ, dir string
	create := &cobra.Command{
		Use:   "create NAME [--ppk] [--type ed25519|rsa]",
		Short: "Create a key pair and save its private key as NAME.pem (and NAME.ppk)",
		Long: `Create a key pair. The private key is shown only now: it is saved as NAME.pem
(mode 0600) in the current folder (or --dir), and with --ppk also as NAME.ppk
for PuTTY. The control plane keeps only the public key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			pem := filepath.Join(dir, name+".pem")
			files := []string{pem}
			if ppk {
				files = append(files, filepath.Join(dir, name+".ppk"))
			}
			for _, f := range files {
				if _, err := os.Lstat(f); err == nil {
					return fmt.Errorf("%s already exists: remove it or choose another name or --dir (nothing was created)", f)
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.KeyPairs.CreateKeyPair(cmd.Context(), connect.NewRequest(&hacv1.CreateKeyPairRequest{Name: name, Type: typ, Ppk: ppk}))
			if err != nil {
				return err
			}
			for i, data := range [][]byte{resp.Msg.PrivateKeyPem, resp.Msg.PrivateKeyPpk}[:len(files)] {
				if err := writeSecret(files[i], data); err != nil {
					return fmt.Errorf("save %s: %w (the key cannot be shown again: run hac keypair delete %s and create it anew)", files[i], err, name)
				}
			}
			k := resp.Msg.KeyPair
			fmt.Fprintf(a.stdout, "Key pair %q created (%s, %s).\n", k.Name, k.Type, k.Fingerprint)
			for _, f := range files {
				fmt.Fprintf(a.stdout, "Private key saved to %s (mode 0600); it is not kept anywhere else.\n", f)
			}
			return nil
		},
	}
	create.Flags().BoolVar(&ppk, "ppk", false, "also save the private key as NAME.ppk for PuTTY")
	create.Flags().StringVar(&typ, "type", "ed25519", "key type: ed25519 or rsa")
	create.Flags().StringVar(&dir, "dir", ".", "folder for the key files")

	imp := &cobra.Command{
		Use:   "import NAME FILE.pub",
		Short: "Import an existing public key",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			if len(raw) > 16<<10 {
				return fmt.Errorf("%s is %d bytes: a public key file is one line", args[1], len(raw))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.KeyPairs.ImportKeyPair(cmd.Context(), connect.NewRequest(&hacv1.ImportKeyPairRequest{Name: args[0], PublicKey: string(raw)}))
			if err != nil {
				return err
			}
			k := resp.Msg.KeyPair
			fmt.Fprintf(a.stdout, "Key pair %q imported (%s, %s).\n", k.Name, k.Type, k.Fingerprint)
			return nil
		},
	}
	list := a.listCmd("list", "List your key pairs", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.KeyPairs.ListKeyPairs(cmd.Context(), connect.NewRequest(&hacv1.ListKeyPairsRequest{}))
		if err != nil {
			return output.Table{}, nil, err
		}
		t := output.Table{Header: []string{"NAME", "TYPE", "FINGERPRINT", "CREATED"}}
		for _, k := range resp.Msg.KeyPairs {
			t.Rows = append(t.Rows, []string{k.Name, k.Type, k.Fingerprint, when(k.CreatedAt)})
		}
		return t, resp.Msg, nil
	})
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a key pair (your NAME.pem stays where it is)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.KeyPairs.DeleteKeyPair(cmd.Context(), connect.NewRequest(&hacv1.DeleteKeyPairRequest{Name: args[0]})); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Key pair %q deleted.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, imp, list, del)
	return cmd
}

// writeSecret creates a new file with mode 0600 and never replaces one.
func writeSecret(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s appeared meanwhile", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
