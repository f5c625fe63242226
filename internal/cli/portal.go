package cli

import (
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
)

func (a *app) serverCreateCmd() *cobra.Command {
	req := &hacv1.CreateServerRequest{}
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME --keypair KEYPAIR [--model MODEL] [--type TYPE] [--zone Z] [--tier T] [--image I]",
		Short: "Create a server (a lightweight VM with SSH) and wait until it runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Portal.CreateServer(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Server %q is being created (%s, %s, address %s).\n", req.Name, resp.Msg.Server.Type, resp.Msg.Server.Model, resp.Msg.Server.PrivateAddress)
			if wait == 0 {
				return nil
			}
			deadline := time.Now().Add(wait)
			for {
				got, err := c.Portal.GetServer(cmd.Context(), connect.NewRequest(&hacv1.GetServerRequest{Name: req.Name}))
				if err != nil {
					return err
				}
				switch s := got.Msg.Server; s.State {
				case "running":
					fmt.Fprintf(a.stdout, "Server %q is running. Next: hac port-forward add %s --private-port 22, then hac firewall add %s --port PUBLIC_PORT.\n", s.Name, s.Name, s.Name)
					return nil
				case "error":
					return fmt.Errorf("server %q failed: %s", s.Name, s.StateReason)
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("server %q is still %s after %v: see hac server show %s", req.Name, got.Msg.Server.State, wait, req.Name)
				}
				time.Sleep(250 * time.Millisecond) // polling the API for the state, as a user would
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.KeyPair, "keypair", "", "key pair whose public key may log in as ubuntu (required)")
	f.StringVar(&req.Model, "model", "", "accelerator model (default small.16gb)")
	f.StringVar(&req.Type, "type", "", "server type, CPUs x GiB (default standard.2x4)")
	f.StringVar(&req.Zone, "zone", "", "zone (default dx-m1)")
	f.StringVar(&req.Tier, "tier", "", "tier (default standard)")
	f.StringVar(&req.Image, "image", "", "OS image (default host)")
	f.StringVar(&req.ReferenceModel, "reference-model", "", "reference model whose code goes into ~/NAME (see hac reference-model list)")
	f.DurationVar(&wait, "wait", 15*time.Minute, "wait this long for the server to run (the first server from an image also waits for the image to be built); 0 returns at once")
	return cmd
}

func (a *app) serverShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a server's detail (state, spec, addresses, key pair, accelerator)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Portal.GetServer(cmd.Context(), connect.NewRequest(&hacv1.GetServerRequest{Name: args[0]}))
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, resp.Msg.Server)
			}
			s := resp.Msg.Server
			state := s.State
			if s.StateReason != "" {
				state += " (" + s.StateReason + ")"
			}
			program := "none"
			if j := s.Job; j != nil {
				program = fmt.Sprintf("job %s, pid %d, %s, since %s", j.Id, j.ClientPid, j.Command, when(j.AllocatedAt))
			}
			rows := [][2]string{
				{"Name", s.Name}, {"State", state}, {"Zone / tier", s.Zone + " / " + s.Tier},
				{"Type", fmt.Sprintf("%s (%d vCPU, %d MiB, %d GB root disk)", s.Type, s.Cpus, s.MemoryMib, s.RootDiskGb)},
				{"Image", s.Image}, {"Key pair", s.KeyPair}, {"Private address", dash(s.PrivateAddress)},
				{"Public address", dash(s.PublicAddress)}, {"Accelerator model", s.Model}, {"Accelerator token", s.AcceleratorToken},
				{"Program running", program}, {"Reference model", dash(s.ReferenceModel)}, {"Billing", "hourly"}, {"Created", when(s.CreatedAt)},
			}
			for _, r := range rows {
				fmt.Fprintf(a.stdout, "%-19s %s\n", r[0]+":", r[1])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) serverDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Stop and delete a server with its port forwards and firewall rules",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.Portal.DeleteServer(cmd.Context(), connect.NewRequest(&hacv1.DeleteServerRequest{Name: args[0]})); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Server %q is being deleted.\n", args[0])
			return nil
		},
	}
}

func (a *app) serverSetModelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "set-model NAME MODEL",
		Short: "Change a server's accelerator model (refused while a program runs)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.Portal.SetServerModel(cmd.Context(), connect.NewRequest(&hacv1.SetServerModelRequest{Name: args[0], Model: args[1]})); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Server %q now has accelerator model %s.\n", args[0], args[1])
			return nil
		},
	}
}

func (a *app) portForwardCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "port-forward", Short: "Forward public ports to servers"}
	req := &hacv1.AddPortForwardRequest{}
	add := &cobra.Command{
		Use:   "add SERVER --private-port PORT [--public-port PORT] [--protocol tcp|udp]",
		Short: "Forward a public port to a server's private port",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Server = args[0]
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Portal.AddPortForward(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			f := resp.Msg.PortForward
			fmt.Fprintf(a.stdout, "Forward %s added: %s:%d/%s -> %s:%d.\nIt is closed until a firewall rule opens it: hac firewall add %s --port %d [--source CIDR]\n",
				f.Id, f.PublicAddress, f.PublicPort, f.Protocol, f.Server, f.PrivatePort, f.Server, f.PublicPort)
			return nil
		},
	}
	add.Flags().Int32Var(&req.PrivatePort, "private-port", 0, "the server's port, such as 22 for SSH")
	add.Flags().Int32Var(&req.PublicPort, "public-port", 0, "the public port (default: a free one)")
	add.Flags().StringVar(&req.Protocol, "protocol", "tcp", "tcp or udp")
	add.MarkFlagRequired("private-port")
	var server string
	list := a.listCmd("list", "List port forwards", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.Portal.ListPortForwards(cmd.Context(), connect.NewRequest(&hacv1.ListPortForwardsRequest{Server: server}))
		if err != nil {
			return output.Table{}, nil, err
		}
		t := output.Table{Header: []string{"ID", "SERVER", "PROTOCOL", "PUBLIC", "PRIVATE PORT"}}
		for _, f := range resp.Msg.PortForwards {
			t.Rows = append(t.Rows, []string{f.Id, f.Server, f.Protocol, fmt.Sprintf("%s:%d", f.PublicAddress, f.PublicPort), fmt.Sprint(f.PrivatePort)})
		}
		return t, resp.Msg, nil
	})
	list.Flags().StringVar(&server, "server", "", "only this server's")
	del := a.deleteByIDCmd("delete ID", "Delete a port forward", func(cmd *cobra.Command, c *client.Conn, id string) error {
		_, err := c.Portal.DeletePortForward(cmd.Context(), connect.NewRequest(&hacv1.DeletePortForwardRequest{Id: id}))
		return err
	})
	cmd.AddCommand(add, list, del)
	return cmd
}

func (a *app) firewallCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "firewall", Short: "Open forwarded ports to sources (closed by default)"}
	req := &hacv1.AddFirewallRuleRequest{}
	add := &cobra.Command{
		Use:   "add SERVER --port PUBLIC_PORT [--protocol tcp|udp] [--source CIDR]",
		Short: "Allow connections to a forwarded public port",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Server = args[0]
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Portal.AddFirewallRule(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			r := resp.Msg.Rule
			fmt.Fprintf(a.stdout, "Firewall rule %s added: %s port %d/%s open to %s.\n", r.Id, r.Server, r.Port, r.Protocol, r.Source)
			return nil
		},
	}
	add.Flags().Int32Var(&req.Port, "port", 0, "the public port to open")
	add.Flags().StringVar(&req.Protocol, "protocol", "tcp", "tcp or udp")
	add.Flags().StringVar(&req.Source, "source", "0.0.0.0/0", "who may connect, as an IPv4 CIDR")
	add.MarkFlagRequired("port")
	var server string
	list := a.listCmd("list", "List firewall rules", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.Portal.ListFirewallRules(cmd.Context(), connect.NewRequest(&hacv1.ListFirewallRulesRequest{Server: server}))
		if err != nil {
			return output.Table{}, nil, err
		}
		t := output.Table{Header: []string{"ID", "SERVER", "PROTOCOL", "PORT", "SOURCE"}}
		for _, r := range resp.Msg.Rules {
			t.Rows = append(t.Rows, []string{r.Id, r.Server, r.Protocol, fmt.Sprint(r.Port), r.Source})
		}
		return t, resp.Msg, nil
	})
	list.Flags().StringVar(&server, "server", "", "only this server's")
	del := a.deleteByIDCmd("delete ID", "Delete a firewall rule", func(cmd *cobra.Command, c *client.Conn, id string) error {
		_, err := c.Portal.DeleteFirewallRule(cmd.Context(), connect.NewRequest(&hacv1.DeleteFirewallRuleRequest{Id: id}))
		return err
	})
	cmd.AddCommand(add, list, del)
	return cmd
}

func (a *app) deleteByIDCmd(use, short string, del func(*cobra.Command, *client.Conn, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := del(cmd, c, args[0]); err != nil {
				return err
			}
			what := strings.TrimPrefix(short, "Delete a ")
			fmt.Fprintf(a.stdout, "%s%s %s deleted.\n", strings.ToUpper(what[:1]), what[1:], args[0])
			return nil
		},
	}
}

// serverPowerCmd is hac server stop|start NAME.
func (a *app) serverPowerCmd(verb string) *cobra.Command {
	short := "Stop a server (its disk stays; a running program is ended)"
	if verb == "start" {
		short = "Start a stopped server"
	}
	return &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var s *hacv1.ServerDetail
			if verb == "start" {
				resp, err := c.Portal.StartServer(cmd.Context(), connect.NewRequest(&hacv1.StartServerRequest{Name: args[0]}))
				if err != nil {
					return err
				}
				s = resp.Msg.Server
			} else {
				resp, err := c.Portal.StopServer(cmd.Context(), connect.NewRequest(&hacv1.StopServerRequest{Name: args[0]}))
				if err != nil {
					return err
				}
				s = resp.Msg.Server
			}
			fmt.Fprintf(a.stdout, "Server %q is %s.\n", s.Name, s.State)
			return nil
		},
	}
}
