package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/cli/output"
	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/version"
)

func writeJSON(w io.Writer, v any) error { return output.WriteJSON(w, v) }

// listCmd makes a command that prints one listing with -o
// table|wide|json|yaml.
func (a *app) listCmd(use, short string, fetch func(*cobra.Command, *client.Conn) (output.Table, any, error)) *cobra.Command {
	var format string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				format = "json"
			}
			if err := output.CheckFormat(format); err != nil {
				return usageError{err}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, data, err := fetch(cmd, c)
			if err != nil {
				return err
			}
			return output.Write(a.stdout, format, t, data)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "table, wide (more columns), json, yaml or csv (docs/output.md names the fields)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (as -o json)")
	return cmd
}

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format(time.DateTime)
}

func (a *app) nodesCmd() *cobra.Command {
	return a.listCmd("nodes", "List the GPU nodes of the pool", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.Pool.ListNodes(cmd.Context(), connect.NewRequest(&hacv1.ListNodesRequest{}))
		if err != nil {
			return output.Table{}, nil, err
		}
		t := output.Table{Header: []string{"NODE", "STATE", "ADDRESS", "GPUS", "GPU MEMORY", "ALLOCATED", "LAST HEARTBEAT"}}
		for _, n := range resp.Msg.Nodes {
			var total, held int64
			for _, g := range n.Gpus {
				total += g.MemoryMib
				held += g.AllocatedMib
			}
			t.Rows = append(t.Rows, []string{n.Name, n.State, n.Address, fmt.Sprint(len(n.Gpus)), mib(total), mib(held), when(n.LastHeartbeat)})
		}
		return t, resp.Msg, nil
	})
}

// jobsTable is hac jobs' listing.
func jobsTable(jobs []*hacv1.Job, now time.Time) output.Table {
	t := output.Table{Header: []string{"JOB", "SERVER", "MODEL", "STATE", "EXIT", "SUBMITTED", "WAIT", "RUN", "GPUS", "ENDED", "MODE", "NODE", "GPU UUIDS", "COMMAND"},
		Wide: []string{"ENDED", "MODE", "NODE", "GPU UUIDS"}}
	for _, j := range jobs {
		var uuids []string
		for _, p := range j.Placements {
			uuids = append(uuids, p.GpuUuid)
		}
		t.Rows = append(t.Rows, []string{j.Id, j.User + "/" + j.Server, j.Model, j.State, exitCell(j), when(j.SubmittedAt), waited(j, now), heldFor(j, now),
			fmt.Sprint(len(j.Placements)), when(j.EndedAt), mode(j), firstNode(j), strings.Join(uuids, ","), j.Command})
	}
	return t
}

func exitCell(j *hacv1.Job) string {
	if j.HasExitCode {
		return fmt.Sprint(j.ExitCode)
	}
	return "-"
}

func mode(j *hacv1.Job) string {
	if j.Detached {
		return "detached"
	}
	return "attached"
}

func firstNode(j *hacv1.Job) string {
	if len(j.Placements) > 0 {
		return j.Placements[0].Node
	}
	return "-"
}

// span says a duration as listings do: 45s, 3m05s, 1h02m.
func span(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

// waited says how long a job waited for its GPUs (so far, if it waits).
func waited(j *hacv1.Job, now time.Time) string {
	if j.SubmittedAt == nil {
		return "-"
	}
	switch {
	case j.AllocatedAt != nil:
		return span(j.AllocatedAt.AsTime().Sub(j.SubmittedAt.AsTime()))
	case j.EndedAt != nil:
		return span(j.EndedAt.AsTime().Sub(j.SubmittedAt.AsTime()))
	}
	return span(now.Sub(j.SubmittedAt.AsTime()))
}

// heldFor says how long a job held (or has held) its GPUs: what it is
// billed for.
func heldFor(j *hacv1.Job, now time.Time) string {
	if j.AllocatedAt == nil {
		return "-"
	}
	end := now
	if j.EndedAt != nil {
		end = j.EndedAt.AsTime()
	}
	return span(end.Sub(j.AllocatedAt.AsTime()))
}

func (a *app) jobsCmd() *cobra.Command {
	var req hacv1.ListJobsRequest
	var since string
	cmd := a.listCmd("jobs", "List recent jobs, newest first", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		if since != "" {
			t, err := parseTime("--since", since, time.Now(), time.Local)
			if err != nil {
				return output.Table{}, nil, usageError{err}
			}
			req.Since = timestamppb.New(t)
		}
		resp, err := c.Pool.ListJobs(cmd.Context(), connect.NewRequest(&req))
		if err != nil {
			return output.Table{}, nil, err
		}
		return jobsTable(resp.Msg.Jobs, time.Now()), resp.Msg, nil
	})
	cmd.Long = `List recent jobs, newest first: state, exit code, how long each waited
for its GPUs and held them (what is billed), how many GPUs. A server's
token lists that server's jobs; an admin's anyone's.`
	cmd.Example = `  hac jobs
  hac jobs --state running --state queued
  hac jobs --since 24h -o wide
  hac jobs --server web1 -o json | jq '.jobs[].exitCode'`
	cmd.Flags().Int32Var(&req.Limit, "limit", 20, "how many jobs")
	cmd.Flags().StringSliceVar(&req.States, "state", nil, "only jobs in this state: queued, running, completed, failed, canceled, lost (repeatable)")
	cmd.Flags().StringVar(&since, "since", "", "only jobs submitted since then: a duration ago (24h, 90m) or a date (2026-12-01, 2026-12-01T15:04)")
	cmd.Flags().StringVar(&req.Server, "server", "", "only this server's jobs")
	cmd.Flags().StringVar(&req.User, "user", "", "only this user's jobs (admins)")
	return cmd
}

// parseTime reads a time flag: a duration before now, or a date or time
// in loc unless it names its offset (RFC 3339).
func parseTime(flag, s string, now time.Time, loc *time.Location) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q: give a duration ago (24h, 90m) or a date (2026-12-01, 2026-12-01T15:04)", flag, s)
}

// queueReason says where a job of hac queue stands, as squeue's REASON.
func queueReason(j *hacv1.Job) string {
	switch j.WaitReason {
	case "":
		if len(j.Placements) > 0 {
			return "on " + j.Placements[0].Node
		}
		return "-"
	case "priority":
		return fmt.Sprintf("priority (%d ahead)", j.QueuePosition-1)
	case "server-busy":
		return "server busy"
	}
	return j.WaitReason
}

// queueStart says when a job of hac queue started or may start.
func queueStart(j *hacv1.Job) string {
	switch {
	case j.AllocatedAt != nil:
		return when(j.AllocatedAt)
	case j.EstimatedStart != nil:
		return fmt.Sprintf("%s (%d runs)", aboutIn(time.Until(j.EstimatedStart.AsTime())), j.EstimateSamples)
	}
	return "-"
}

func (a *app) queueCmd() *cobra.Command {
	queue := a.listCmd("queue", "List running jobs, then waiting ones in service order, with why each waits", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.Pool.ListQueue(cmd.Context(), connect.NewRequest(&hacv1.ListQueueRequest{}))
		if err != nil {
			return output.Table{}, nil, err
		}
		t := output.Table{Header: []string{"JOB", "STATE", "SERVER", "MODEL", "PRIORITY", "SUBMITTED", "REASON", "START", "COMMAND"}}
		for _, j := range resp.Msg.Jobs {
			t.Rows = append(t.Rows, []string{j.Id, j.State, j.User + "/" + j.Server, j.Model, fmt.Sprint(j.Priority), when(j.SubmittedAt), queueReason(j), queueStart(j), j.Command})
		}
		return t, resp.Msg, nil
	})
	queue.AddCommand(&cobra.Command{
		Use:   "cancel JOB",
		Short: "Withdraw a queued job (yours, or any as an admin); its hac run stops waiting",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.Pool.CancelJob(cmd.Context(), connect.NewRequest(&hacv1.CancelJobRequest{JobId: args[0]})); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Job %s canceled.\n", args[0])
			return nil
		},
	})
	return queue
}

func (a *app) serverCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "server", Short: "Create, register, show, list and delete servers"}
	var model, image string
	register := &cobra.Command{
		Use:   "register NAME [--model MODEL] [--image IMAGE]",
		Short: "Register an existing machine as a server and print its token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Servers.RegisterServer(cmd.Context(), connect.NewRequest(&hacv1.RegisterServerRequest{Name: args[0], Model: model, Image: image}))
			if err != nil {
				return err
			}
			s := resp.Msg.Server
			fmt.Fprintf(a.stdout, "Server %q registered (model %s).\nIts token, shown only now: %s\n\nOn that machine, write /etc/hac/config:\n%s",
				s.Name, s.Model, resp.Msg.Token, FormatConfig(Config{Addr: c.Config.Addr, CAPin: c.Config.CAPin, Token: resp.Msg.Token}))
			return nil
		},
	}
	register.Flags().StringVar(&model, "model", "", "accelerator model (default small.16gb)")
	register.Flags().StringVar(&image, "image", "", "the machine's base system among hac's images (debian-12, host): jobs run on it with the client's virtualenv, conda prefix and user site-packages")
	list := a.listCmd("list", "List servers", func(cmd *cobra.Command, c *client.Conn) (output.Table, any, error) {
		resp, err := c.Servers.ListServers(cmd.Context(), connect.NewRequest(&hacv1.ListServersRequest{}))
		if err != nil {
			return output.Table{}, nil, err
		}
		t := output.Table{Header: []string{"NAME", "USER", "STATE", "ADDRESS", "MODEL", "ACCELERATOR TOKEN", "JOB", "CREATED"}}
		for _, s := range resp.Msg.Servers {
			t.Rows = append(t.Rows, []string{s.Name, s.User, s.State, dash(s.PrivateAddress), s.Model, s.AcceleratorToken, dash(s.JobId), when(s.CreatedAt)})
		}
		return t, resp.Msg, nil
	})
	cmd.AddCommand(register, list, a.serverCreateCmd(), a.serverShowCmd(), a.serverDeleteCmd(), a.serverSetModelCmd(),
		a.serverPowerCmd("stop"), a.serverPowerCmd("start"))
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client and control plane versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.stdout, "Client Version: %s\n", version.Version)
			c, err := a.client()
			if err != nil {
				fmt.Fprintf(a.stdout, "Server Version: unknown (%s)\n", userMessage(err))
				return nil
			}
			resp, err := c.Accel.GetVersion(cmd.Context(), connect.NewRequest(&hacv1.GetVersionRequest{}))
			if err != nil {
				fmt.Fprintf(a.stdout, "Server Version: unknown (%s)\n", userMessage(err))
				return nil
			}
			fmt.Fprintf(a.stdout, "Server Version: %s\n", resp.Msg.Version)
			return nil
		},
	}
}
