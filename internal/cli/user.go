package cli

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

func (a *app) userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage accounts (admin)"}
	var admin bool
	create := &cobra.Command{
		Use:   "create NAME [--admin]",
		Short: "Create a user and print its token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Users.CreateUser(cmd.Context(), connect.NewRequest(&hacv1.CreateUserRequest{Name: args[0], Admin: admin}))
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "User %q created. Their token, shown only now: %s\n\nTheir ~/.config/hac/config:\n%s",
				resp.Msg.Name, resp.Msg.Token, FormatConfig(Config{Addr: c.Config.Addr, CAPin: c.Config.CAPin, Token: resp.Msg.Token}))
			return nil
		},
	}
	create.Flags().BoolVar(&admin, "admin", false, "the user may see and manage everything")
	cmd.AddCommand(create)
	return cmd
}
