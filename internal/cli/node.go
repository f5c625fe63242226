package cli

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// nodeCmd enrolls, drains and removes GPU nodes (admin; SPEC P1, P8).
func (a *app) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Enroll, drain and remove GPU nodes (admin)"}
	var ttl time.Duration
	add := &cobra.Command{
		Use:   "add NAME [--ttl DURATION]",
		Short: "Enroll a node: print a one-time join token bound to NAME",
		Long: `Enroll a GPU node under NAME. The join token printed is good once, for
--ttl (default 1h); the node's agent trades it for a credential of its own.
Keep it off command lines and shells' history: write it to a file and pass
--join-file, or set HAC_JOIN_TOKEN.`,
		Example: `  hac node add gpu1 > gpu1.join
  scp gpu1.join gpu1:   # then on gpu1: hac agent --server URL --join-file gpu1.join`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Pool.AddNode(cmd.Context(), connect.NewRequest(&hacv1.AddNodeRequest{Name: args[0], TtlSeconds: int64(ttl / time.Second)}))
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, resp.Msg.JoinToken)
			fmt.Fprintf(a.stderr, "Join token for node %s, good once until %s. On the node:\n  hac agent --server %s --join-file FILE_WITH_THE_TOKEN\n",
				args[0], resp.Msg.Expires.AsTime().Local().Format(time.RFC3339), c.Config.Addr)
			return nil
		},
	}
	add.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the join token is good for (1m to 168h)")
	var resume bool
	drain := &cobra.Command{
		Use:   "drain NAME [--resume]",
		Short: "Stop new jobs on a node (running ones go on); --resume lets them in again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.Pool.DrainNode(cmd.Context(), connect.NewRequest(&hacv1.DrainNodeRequest{Name: args[0], Resume: resume})); err != nil {
				return err
			}
			if resume {
				fmt.Fprintf(a.stdout, "Node %s takes new jobs again.\n", args[0])
			} else {
				fmt.Fprintf(a.stdout, "Node %s takes no new jobs; its running jobs go on.\n", args[0])
			}
			return nil
		},
	}
	drain.Flags().BoolVar(&resume, "resume", false, "let new jobs in again")
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Revoke a node's credential and take it out of the pool; its running jobs end",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.Pool.RemoveNode(cmd.Context(), connect.NewRequest(&hacv1.RemoveNodeRequest{Name: args[0]})); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Node %s removed; its agent stops when it next reports.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, drain, remove)
	return cmd
}
