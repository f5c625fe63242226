package cli

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/version"
)

func (a *app) smiCmd() *cobra.Command {
	var asJSON, reset bool
	var format string
	cmd := &cobra.Command{
		Use:   "smi [-o table|wide|json|yaml] [--reset]",
		Short: "Show the accelerator's status (also: hac-smi)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if reset {
				resp, err := c.Accel.ResetAccelerator(ctx, connect.NewRequest(&hacv1.ResetAcceleratorRequest{Server: c.Config.Server}))
				if err != nil {
					return err
				}
				if !resp.Msg.Released {
					fmt.Fprintln(a.stdout, "Device release failed. (Not running job.)")
					return exitCode(1)
				}
				fmt.Fprintln(a.stdout, "Device release success.")
				return nil
			}
			resp, err := c.Accel.GetAccelerator(ctx, connect.NewRequest(&hacv1.GetAcceleratorRequest{Server: c.Config.Server}))
			if err != nil {
				return err
			}
			if asJSON {
				format = "json"
			}
			switch format {
			case "json", "yaml":
				return output.Write(a.stdout, format, output.Table{}, resp.Msg)
			case "table", "wide", "":
				drawSMI(a.stdout, resp.Msg.Accelerator, version.Version, resp.Msg.ServerVersion)
				return nil
			}
			return usageError{fmt.Errorf("-o %q: use table, wide, json or yaml", format)}
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "table or wide (the accelerator's two tables), json or yaml")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (as -o json)")
	cmd.Flags().BoolVar(&reset, "reset", false, "release a stuck allocation of this server")
	return cmd
}

func (a *app) switchModelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "switch-model [MODEL]",
		Short: "Change the accelerator model (also: hac-switch-model)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			switchTo := func(model string) (*hacv1.Accelerator, error) {
				resp, err := c.Accel.SwitchModel(ctx, connect.NewRequest(&hacv1.SwitchModelRequest{Server: c.Config.Server, Model: model}))
				if err != nil {
					if connect.CodeOf(err) == connect.CodeFailedPrecondition {
						fmt.Fprintln(a.stdout, userMessage(err))
						return nil, exitCode(1)
					}
					return nil, err
				}
				fmt.Fprintf(a.stdout, "The %s model is successfully switched to  \"%s\".\n", catalog.DisplayName, model)
				return resp.Msg.Accelerator, nil
			}
			if len(args) == 1 {
				_, err := switchTo(args[0])
				return err
			}
			acc, err := c.Accel.GetAccelerator(ctx, connect.NewRequest(&hacv1.GetAcceleratorRequest{Server: c.Config.Server}))
			if err != nil {
				return err
			}
			models, err := c.Accel.ListModels(ctx, connect.NewRequest(&hacv1.ListModelsRequest{}))
			if err != nil {
				return err
			}
			return a.switchDialogue(acc.Msg.Accelerator.Model, models.Msg.Models, switchTo)
		},
	}
}

// switchDialogue is SPEC A2's interactive menu.
func (a *app) switchDialogue(current string, models []*hacv1.Model, switchTo func(string) (*hacv1.Accelerator, error)) error {
	fmt.Fprintf(a.stdout, "Current %s: %s\n\n", catalog.DisplayName, current)
	list := func() {
		for i, m := range models {
			star := ""
			if m.Name == current {
				star = "*"
			}
			fmt.Fprintf(a.stdout, "%d. %s%s\n", i+1, m.Name, star)
		}
		fmt.Fprintln(a.stdout)
	}
	list()
	in := bufio.NewScanner(a.stdin)
	for {
		fmt.Fprintf(a.stdout, "Selection (1-%d, q, Q): ", len(models))
		if !in.Scan() {
			fmt.Fprintln(a.stdout)
			return nil // end of input quits
		}
		answer := strings.TrimSpace(in.Text())
		if answer == "q" || answer == "Q" {
			return nil
		}
		n, err := strconv.Atoi(answer)
		if err != nil || n < 1 || n > len(models) {
			continue
		}
		acc, err := switchTo(models[n-1].Name)
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		if err != nil {
			return err
		}
		current = acc.Model
		fmt.Fprintln(a.stdout)
		list()
	}
}
