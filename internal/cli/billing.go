package cli

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/meter"
)

// priceCmd sets and lists prices (SPEC P4; admins set them).
func (a *app) priceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "price", Short: "Set and list the prices per hour of models and server types"}
	var from string
	set := &cobra.Command{
		Use:   "set KIND ITEM AMOUNT [--from TIME]",
		Short: "Set a price per hour (admin): KIND is model, server or stopped-server",
		Long: `Set the price per hour of an accelerator model (KIND model: charged per
second while a program holds it), of a server type while its servers run
(server) or while they are stopped (stopped-server). AMOUNT is in the
control plane's currency (hac price list names it), such as 1.20. The
price is in force from --from (default: now) until the next price of the
same item; --from is never in the past, so that what was metered is never
priced again. Selecting or switching a model is free.`,
		Example: `  hac price set model small.16gb 1.20
  hac price set model xlarge.96gb 7.50 --from 2027-01-01
  hac price set server standard.2x4 0.05
  hac price set stopped-server standard.2x4 0`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &hacv1.SetPriceRequest{Kind: args[0], Item: args[1], Amount: args[2]}
			if from != "" {
				t, err := parseTime("--from", from, time.Now(), time.UTC)
				if err != nil {
					return usageError{err}
				}
				req.EffectiveFrom = timestamppb.New(t)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Billing.SetPrice(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			p := resp.Msg.Price
			fmt.Fprintf(a.stdout, "The %s price of %s is %s an hour from %s UTC.\n", p.Kind, p.Item, p.PerHour, inZone(p.EffectiveFrom, time.UTC))
			return nil
		},
	}
	set.Flags().StringVar(&from, "from", "", "when the price takes effect, UTC unless the time says otherwise (2027-01-01, 2027-01-01T09:00, RFC 3339); default now")
	list := a.listCmd("list", "List every price set, past, in force and scheduled", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.Billing.ListPrices(cmd.Context(), connect.NewRequest(&hacv1.ListPricesRequest{}))
		if err != nil {
			return output.Table{}, nil, err
		}
		loc, zone := displayZone(resp.Msg.DisplayZone)
		t := output.Table{Header: []string{"KIND", "ITEM", "PER HOUR (" + resp.Msg.Currency + ")", "FROM (" + zone + ")", "STATE", "SET BY", "SET AT (" + zone + ")"},
			Wide: []string{"SET BY", "SET AT (" + zone + ")"}}
		for _, p := range resp.Msg.Prices {
			t.Rows = append(t.Rows, []string{p.Kind, p.Item, p.PerHour, inZone(p.EffectiveFrom, loc), p.State, p.SetBy, inZone(p.SetAt, loc)})
		}
		return t, resp.Msg, nil
	})
	cmd.AddCommand(set, list)
	return cmd
}

// displayZone is the operator's time zone that the control plane names,
// with the name to show; UTC when this machine does not know it.
func displayZone(name string) (*time.Location, string) {
	if loc, err := time.LoadLocation(name); err == nil && name != "" {
		return loc, name
	}
	return time.UTC, "UTC"
}

// inZone prints a time of the meter in the operator's zone.
func inZone(t *timestamppb.Timestamp, loc *time.Location) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().In(loc).Format("2006-01-02 15:04:05")
}

func (a *app) usageCmd() *cobra.Command {
	var req hacv1.GetUsageRequest
	var from, to string
	cmd := a.listCmd("usage", "Show metered accelerator and server time and its charges", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		now := time.Now()
		for _, f := range []struct {
			name, value string
			into        **timestamppb.Timestamp
		}{{"--from", from, &req.From}, {"--to", to, &req.To}} {
			if f.value == "" {
				continue
			}
			t, err := parseTime(f.name, f.value, now, time.UTC)
			if err != nil {
				return output.Table{}, nil, usageError{err}
			}
			*f.into = timestamppb.New(t)
		}
		if req.From != nil && req.To != nil && !req.From.AsTime().Before(req.To.AsTime()) {
			return output.Table{}, nil, usageError{fmt.Errorf("--from %s is not before --to %s", from, to)}
		}
		if req.By != "" {
			if _, err := meter.ParseBy(req.By); err != nil {
				return output.Table{}, nil, usageError{err}
			}
		}
		resp, err := c.Billing.GetUsage(cmd.Context(), connect.NewRequest(&req))
		if err != nil {
			return output.Table{}, nil, err
		}
		return usageTable(resp.Msg), resp.Msg, nil
	})
	cmd.Long = `Show the time your programs held accelerators and your servers ran or
stood stopped, grouped by --by, with what it costs at the prices in force
(hac price list). Waiting in the queue is free; so is a run that an
infrastructure fault ended (node lost, agent restart, worker start
failure): its time shows under FREE HOURS. The meter keeps UTC (days and
months are UTC days and months; --by hour shows hours in the operator's
zone); the report covers whole hours from --from (default: the start of
this month) to --to (default: now), and time still running counts up to
now. An admin sees everyone's, or one user's with --user.`
	cmd.Example = `  hac usage
  hac usage --by model --from 2026-11-01 --to 2026-12-01
  hac usage --by hour --from 24h
  hac usage --by user -o csv > usage.csv      # admins: everyone`
	cmd.Flags().StringVar(&from, "from", "", "first hour: a duration ago (24h) or a date or time, UTC unless it says otherwise (default: the start of this month)")
	cmd.Flags().StringVar(&to, "to", "", "end, not included: as --from (default: now)")
	cmd.Flags().StringVar(&req.By, "by", "day", "group by hour, day, month, server, model or user")
	cmd.Flags().StringVar(&req.User, "user", "", "one user's usage (admins)")
	return cmd
}

func usageTable(u *hacv1.GetUsageResponse) output.Table {
	loc, zone := displayZone(u.DisplayZone)
	by := map[string]string{"hour": "HOUR (" + zone + ")", "day": "DAY (UTC)", "month": "MONTH (UTC)", "server": "SERVER", "model": "MODEL OR TYPE", "user": "USER"}[u.By]
	t := output.Table{Header: []string{by, "KIND", "HOURS", "GPU HOURS", "FREE HOURS", "CHARGE (" + u.Currency + ")"}}
	for _, l := range u.Lines {
		key := l.Key
		if hour, err := time.Parse("2006-01-02T15:04Z", key); err == nil && u.By == "hour" {
			key = hour.In(loc).Format("2006-01-02 15:04")
		}
		t.Rows = append(t.Rows, []string{key, l.Kind, meter.FormatHours(l.HeldMs), meter.FormatHours(l.GpuMs), meter.FormatHours(l.FreeMs), l.Charge})
	}
	total := "TOTAL"
	if u.Open {
		total = "TOTAL (so far)"
	}
	t.Footer = [][]string{{total, "", "", "", "", u.Total}}
	return t
}

func (a *app) invoiceCmd() *cobra.Command {
	var req hacv1.GetInvoiceRequest
	cmd := a.listCmd("invoice MONTH", "Make the monthly statement of charges", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		if _, _, err := meter.ParseMonth(req.Month); err != nil {
			return output.Table{}, nil, usageError{err}
		}
		resp, err := c.Billing.GetInvoice(cmd.Context(), connect.NewRequest(&req))
		if err != nil {
			return output.Table{}, nil, err
		}
		return invoiceTable(resp.Msg.Invoices), resp.Msg, nil
	})
	cmd.Args = func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageError{fmt.Errorf("hac invoice takes one month, as YYYY-MM: hac invoice %s", time.Now().UTC().Format("2006-01"))}
		}
		return nil
	}
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req.Month = args[0]
		return run(cmd, nil)
	}
	cmd.Long = `Make the statement of one month (YYYY-MM, UTC): a line per item, server
and price, each rounded once, and their total. Runs that an
infrastructure fault ended are listed, not charged. FINAL is yes once
nothing metered in the month is still running: a final statement is the
same, byte for byte, whenever it is made again. An admin gets every
user's statement, or one user's with --user.`
	cmd.Example = `  hac invoice 2026-11
  hac invoice 2026-11 -o csv > 2026-11.csv
  hac invoice 2026-11 --user alice -o json`
	cmd.Flags().StringVar(&req.User, "user", "", "one user's statement (admins)")
	return cmd
}

func invoiceTable(invs []*hacv1.Invoice) output.Table {
	cur := "-"
	if len(invs) > 0 {
		cur = invs[0].Currency
	}
	t := output.Table{Header: []string{"USER", "MONTH", "FINAL", "KIND", "ITEM", "SERVER", "PER HOUR (" + cur + ")", "HOURS", "GPU HOURS", "CHARGED", "CHARGE (" + cur + ")"},
		Wide: []string{"GPU HOURS"}}
	yes := map[bool]string{true: "yes", false: "no"}
	for _, inv := range invs {
		for _, l := range inv.Lines {
			charged := "yes"
			if !l.Charged {
				charged = "no: infrastructure fault"
			}
			t.Rows = append(t.Rows, []string{inv.User, inv.Month, yes[inv.Final], l.Kind, l.Item, l.Server, l.PerHour, meter.FormatHours(l.HeldMs), meter.FormatHours(l.GpuMs), charged, l.Charge})
		}
		t.Footer = append(t.Footer, []string{inv.User, inv.Month, yes[inv.Final], "total", "", "", "", "", "", "", inv.Total})
	}
	return t
}
